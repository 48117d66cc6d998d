"use strict";
// Queries (`POST .../docs` with a query body). The SDK scopes a query with headers, not with
// its text: one logical partition (x-ms-documentdb-partitionkey), one physical partition
// (x-ms-documentdb-partitionkeyrangeid) or a feed range (x-ms-start-epk/x-ms-end-epk); a query
// without any runs over the whole container (the SDK then expects the complete answer).
// Upstream ignores the headers and refuses queries whose text does not name the partition
// key; here the query runs with upstream's engine over the documents in scope.
const { readItems, readJson } = require("./upstream");

async function queryDocuments(collection, req, res, inScope) {
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const body = await readJson(req);
    if (!body || !body.query) {
      res.statusCode = 400;
      return { code: "BadRequest", message: "missing query" };
    }
    const items = collection.documents;
    const definition = collection.read();
    const compositeIndexes =
      (definition.indexingPolicy && definition.indexingPolicy.compositeIndexes) || [];
    const documents = [];
    for (const item of items._data.values()) {
      const doc = item.read();
      if (doc && (!inScope || inScope(doc))) documents.push(doc);
    }
    try {
      return items._getQuery(body.query).exec(documents, {
        parameters: body.parameters,
        udf: items._userDefinedFunctions(),
        maxItemCount,
        continuation,
        compositeIndexes,
      });
    } catch (err) {
      res.statusCode = 400;
      return { code: "BadRequest", message: String(err && err.message) };
    }
  });
}

module.exports = { queryDocuments };
