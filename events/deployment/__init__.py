"""This deployment's declaration: the topology file (the one place a deployment is declared),
the settings it names, the contracts, and the feeds derived from them."""
