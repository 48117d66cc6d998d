#!/usr/bin/env node
"use strict";
// Local Cosmos DB server for the dev stack: @vercel/cosmosdb-server's account and handlers plus
// what the Python SDK needs (LSNs and a real change feed, atomic batch, 404s, TTL, keep-alive,
// optional persistence). Listens on 127.0.0.1 over HTTPS with upstream's self-signed
// certificate; any key is accepted. Prints `READY https://127.0.0.1:<port>/` once it serves.
//
//   node launcher.js [--port PORT] [--data FILE] [--latency MS] [--partitions N] [--trace]
// --latency holds every response MS milliseconds (a simulated network round trip).
// --partitions gives each new container N physical partitions (feed ranges; default 1).
// --trace logs each request's method, path, status and change-feed headers to stderr.
const fs = require("fs");
const https = require("https");
const { Account, certFile, keyFile } = require("./lib/upstream");
const { createRequestHandler } = require("./lib/request-handler");
const { DataFile } = require("./lib/persistence");
const ttl = require("./lib/ttl");
const partitions = require("./lib/partitions");

const HOST = "127.0.0.1";
const SWEEP_INTERVAL_MS = 1000;
const SOCKET_HIGH_WATER_MARK = 64 * 1024 * 1024;

function parseArgs(argv) {
  const args = { port: 0, data: null, latency: 0 };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--port" || arg === "-p") {
      args.port = Number.parseInt(argv[(i += 1)], 10);
      if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
        throw new Error(`invalid port ${argv[i]}`);
      }
    } else if (arg === "--data") {
      args.data = argv[(i += 1)];
      if (!args.data) throw new Error("--data needs a file");
    } else if (arg === "--latency") {
      args.latency = Number(argv[(i += 1)]);
      if (!Number.isFinite(args.latency) || args.latency < 0 || args.latency > 10000) {
        throw new Error(`invalid latency ${argv[i]} (milliseconds, 0-10000)`);
      }
    } else if (arg === "--partitions") {
      args.partitions = Number(argv[(i += 1)]);
      partitions.setDefaultCount(args.partitions);
    } else if (arg === "--trace") {
      args.trace = true;
    } else if (arg === "--help" || arg === "-h") {
      args.help = true;
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  return args;
}

const TRACED_HEADERS = [
  "a-im",
  "if-none-match",
  "if-modified-since",
  "x-ms-max-item-count",
  "x-ms-start-epk",
  "x-ms-end-epk",
  "x-ms-documentdb-partitionkey",
  "x-ms-documentdb-partitionkeyrangeid",
];

function traceLine(req, res) {
  const headers = TRACED_HEADERS.filter((h) => req.headers[h] !== undefined)
    .map((h) => `${h}=${req.headers[h]}`)
    .join(" ");
  const etag = res.getHeader("etag") || "";
  process.stderr.write(`${req.method} ${req.url} -> ${res.statusCode} ${etag} ${headers}\n`);
}

function* collectionsOf(account) {
  for (const database of account.databases._data.values()) {
    yield* database.collections._data.values();
  }
}

function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\nusage: node launcher.js [--port PORT] [--data FILE] [--latency MS] [--partitions N] [--trace]\n`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write("usage: node launcher.js [--port PORT] [--data FILE] [--latency MS] [--partitions N] [--trace]\n");
    return;
  }

  let account = null;
  let dataFile = null;
  const onMutation = () => dataFile && dataFile.markDirty();
  const server = https.createServer(
    { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile), keepAlive: true },
    createRequestHandler({
      getAccount: () => account,
      onMutation,
      trace: args.trace && traceLine,
      latencyMs: args.latency,
    })
  );
  // Idle keep-alive connections stay open longer than the SDK's pool would reuse them, so a
  // client never sends on a socket the server is just closing.
  server.keepAliveTimeout = 120 * 1000;
  server.headersTimeout = 125 * 1000;

  // Node pauses a kept-alive connection's HTTP parser when a request arrives while the
  // previous response is still buffered above the socket's high-water mark (16 KiB), and over
  // TLS the rest of that request can still reach the paused parser: HPE_PAUSED, connection
  // dropped, the client sees a reset. Change-feed pages are easily bigger than 16 KiB, and a
  // client sends its next request as soon as it has read one. The TLS server has no option
  // for its sockets' mark, so it is raised on each connection.
  server.on("secureConnection", (socket) => {
    socket._writableState.highWaterMark = SOCKET_HIGH_WATER_MARK;
  });
  // A connection the HTTP parser gives up on is logged (the client sees it reset), then
  // answered as Node does by default.
  server.on("clientError", (err, socket) => {
    process.stderr.write(`connection dropped: ${err.code || ""} ${err.message}\n`);
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });
  server.on("error", (err) => {
    process.stderr.write(`cannot listen: ${err.message}\n`);
    process.exit(1);
  });

  server.listen(args.port, HOST, () => {
    const { port } = server.address();
    const ready = new Account(HOST, port);
    if (args.data) {
      dataFile = new DataFile(args.data, ready);
      try {
        dataFile.load();
      } catch (err) {
        process.stderr.write(`cannot load ${args.data}: ${err.message}\n`);
        process.exit(1);
      }
    }
    account = ready;
    setInterval(() => {
      let purged = 0;
      for (const collection of collectionsOf(account)) purged += ttl.purgeExpired(collection);
      if (purged) onMutation();
    }, SWEEP_INTERVAL_MS).unref();
    process.stdout.write(`READY https://${HOST}:${port}/\n`);
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    try {
      if (dataFile) dataFile.flush();
    } catch (err) {
      process.stderr.write(`cannot write ${args.data}: ${err.message}\n`);
      process.exitCode = 1;
    }
    server.close();
    server.closeAllConnections();
    process.stderr.write(`stopped on ${signal}\n`);
    process.exit();
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main();
