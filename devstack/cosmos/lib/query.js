"use strict";
// Queries scoped to one logical partition. The SDK sends the partition key in the
// x-ms-documentdb-partitionkey header and expects only that partition's documents; upstream
// ignores the header and instead refuses queries whose text does not name the partition key.
// Here the query runs over the documents of that partition only, whatever its text.
const { readItems, readJson } = require("./upstream");
const { partitionKeyValues } = require("./partition-key");

const normalise = (values) => JSON.stringify(values.map((v) => (v === undefined ? {} : v)));

function documentsOfPartition(collection, headerValue) {
  const wanted = JSON.parse(headerValue);
  const key = normalise(Array.isArray(wanted) ? wanted : [wanted]);
  const definition = collection.read();
  // Upstream's Items keeps item handles in _data; reading them is its own public shape.
  return [...collection.documents._data.values()]
    .map((item) => item.read())
    .filter((doc) => doc && normalise(partitionKeyValues(definition, doc)) === key);
}

async function queryPartition(collection, req, res, headerValue) {
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const body = await readJson(req);
    if (!body || !body.query) {
      res.statusCode = 400;
      return { message: "missing query" };
    }
    const items = collection.documents;
    const definition = collection.read();
    const compositeIndexes =
      (definition.indexingPolicy && definition.indexingPolicy.compositeIndexes) || [];
    try {
      return items._getQuery(body.query).exec(documentsOfPartition(collection, headerValue), {
        parameters: body.parameters,
        udf: items._userDefinedFunctions(),
        maxItemCount,
        continuation,
        compositeIndexes,
      });
    } catch (err) {
      res.statusCode = 400;
      return { message: String(err && err.message) };
    }
  });
}

module.exports = { queryPartition };
