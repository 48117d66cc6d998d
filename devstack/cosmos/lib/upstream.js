"use strict";
// The one place that reaches into @vercel/cosmosdb-server's internals (pinned to 1.0.1 in
// package.json). Everything else in this folder imports from here, so an upgrade that moves a
// module breaks one file.
const path = require("path");

const LIB = "@vercel/cosmosdb-server/lib";
const load = (name) => {
  const mod = require(`${LIB}/${name}`);
  return mod && mod.__esModule && "default" in mod ? mod.default : mod;
};

const packageRoot = path.dirname(require.resolve("@vercel/cosmosdb-server/package.json"));

module.exports = {
  route: load("routes"),
  Account: load("account"),
  Items: load("account/items"),
  Documents: load("account/documents"),
  documentOperations: require(`${LIB}/handler/_document-operations`),
  patchOperation: require(`${LIB}/handler/_patch-operations`).patchOperation,
  readJson: load("json"),
  readItems: load("handler/_read-items"),
  partitionFromHeader: load("utils/get-partition-from-header"),
  parsePartitionKey: require(`${LIB}/utils/get-partition-from-header`).parsePartitionKey,
  getValue: load("utils/get-value"),
  certFile: path.join(packageRoot, "cert.pem"),
  keyFile: path.join(packageRoot, "key.pem"),
};

// Upstream route handlers that this server replaces (matched by identity after routing).
module.exports.handlers = {
  readDocument: load("handler/read-document"),
  readDocuments: load("handler/read-documents"),
  batchDocuments: load("handler/batch-documents"),
  replaceCollection: load("handler/replace-collection"),
  readPartitionKeyRanges: load("handler/read-partition-key-ranges"),
  queryDocuments: load("handler/query-documents"),
};
