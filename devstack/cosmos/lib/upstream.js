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

// Request bodies are read once by the request handler (limits are checked on the raw bytes);
// upstream's handlers call this module's reader at request time, so they get the same body.
const jsonModule = require(`${LIB}/json`);
const readRawJson = jsonModule.default;
jsonModule.default = async (req) => {
  if (req.devstackBody !== undefined) return JSON.parse(req.devstackBody.toString() || "null");
  return readRawJson(req);
};

// Cosmos writes resource ids in base64 with "-" for "/", so that they fit in a path segment;
// the SDK parses them that way (a "/" in a _rid fails with "Failed Parsing ResourceID").
const ResourceId = load("account/resource-id");
ResourceId.toBase64String = (buffer) => buffer.toString("base64").replace(/\//g, "-");
ResourceId.fromBase64String = (s) => Buffer.from(String(s).replace(/-/g, "/"), "base64");

module.exports = {
  route: load("routes"),
  Account: load("account"),
  Items: load("account/items"),
  Documents: load("account/documents"),
  documentOperations: require(`${LIB}/handler/_document-operations`),
  patchOperation: require(`${LIB}/handler/_patch-operations`).patchOperation,
  readJson: (req) => jsonModule.default(req),
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
  createCollection: load("handler/create-collection"),
  createDatabase: load("handler/create-database"),
  readCollection: load("handler/read-collection"),
  createDocument: load("handler/create-document"),
  upsertDocument: load("handler/upsert-document"),
  replaceDocument: load("handler/replace-document"),
  patchDocument: load("handler/patch-document"),
  deleteDocument: load("handler/delete-document"),
};
