"use strict";
// HTTP front of the server: routes with upstream's router, runs this folder's replacements for
// the handlers upstream gets wrong for the Python SDK (change feed, batch, document read,
// container replace), delegates everything else to upstream, and writes Cosmos-shaped responses
// (JSON error bodies with a `code`, etag header, keep-alive).
const { randomUUID } = require("crypto");
const {
  route,
  handlers,
  readJson,
  partitionFromHeader,
  parsePartitionKey,
} = require("./upstream");
const { readChangeFeed, isChangeFeedRequest, ChangeFeedError } = require("./change-feed");
const { executeBatch } = require("./batch");
const { currentLsn, setLsn } = require("./lsn");
const { partitionKeyValues } = require("./partition-key");
const ttl = require("./ttl");
const { queryPartition } = require("./query");

const ERROR_CODES = {
  400: "BadRequest",
  404: "NotFound",
  409: "Conflict",
  412: "PreconditionFailed",
  424: "FailedDependency",
  500: "InternalServerError",
};

const notFound = (res, what = "Entity") => {
  res.statusCode = 404;
  return { code: "NotFound", message: `${what} with the specified id does not exist in the system.` };
};

function collectionOf(account, params) {
  const collection = account.database(params.dbId).collection(params.collId);
  return collection.read() ? collection : null;
}

const sameKey = (values, headerValue) =>
  JSON.stringify(values.map((v) => (v === undefined ? {} : v))) === JSON.stringify(headerValue);

async function readDocument(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const header = partitionFromHeader(req);
  const key = header ? parsePartitionKey(header, params.docId) : params.docId;
  const doc = collection.document(params.docId, key).read();
  if (!doc || doc.id !== params.docId) return notFound(res);
  if (header) {
    const wanted = JSON.parse(header);
    const values = partitionKeyValues(collection.read(), doc);
    if (!sameKey(values, Array.isArray(wanted) ? wanted : [wanted])) return notFound(res);
  }
  if (req.headers["if-none-match"] && req.headers["if-none-match"] === doc._etag) {
    res.statusCode = 304;
    return undefined;
  }
  return doc;
}

async function readDocumentsOrChangeFeed(account, req, res, params) {
  if (!isChangeFeedRequest(req)) return handlers.readDocuments(account, req, res, params);
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  try {
    const page = readChangeFeed(collection, req);
    res.statusCode = page.statusCode;
    res.setHeader("etag", page.etag);
    res.setHeader("x-ms-item-count", String(page.documents.length));
    res.setHeader("lsn", String(currentLsn(collection)));
    if (page.statusCode === 304) return undefined;
    return {
      _rid: collection.read()._rid,
      Documents: page.documents,
      _count: page.documents.length,
    };
  } catch (err) {
    if (!(err instanceof ChangeFeedError)) throw err;
    res.statusCode = err.statusCode;
    return { code: err.code, message: err.message };
  }
}

async function batch(account, req, res, params) {
  const operations = await readJson(req);
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const result = executeBatch(collection, operations, partitionFromHeader(req));
  res.statusCode = result.statusCode;
  return result.body;
}

// Upstream rebuilds the container object on replace and so drops its documents; carry them over.
async function replaceCollection(account, req, res, params) {
  const before = collectionOf(account, params);
  const body = await handlers.replaceCollection(account, req, res, params);
  const after = collectionOf(account, params);
  if (before && after && before !== after && res.statusCode < 400) {
    after.documents = before.documents;
    after.documents._parent = after;
    after.userDefinedFunctions = before.userDefinedFunctions;
    after.userDefinedFunctions._parent = after;
    setLsn(after, currentLsn(before));
    ttl.invalidate(after);
  }
  return body;
}

// The SDK reads partition key ranges as a change feed and drains it until a 304; ranges never
// change here (one range per container), so anything after the first read is "not modified".
const PKRANGES_ETAG = '"1"';

async function readPartitionKeyRanges(account, req, res, params) {
  const body = await handlers.readPartitionKeyRanges(account, req, res, params);
  if (req.headers["a-im"] && res.statusCode === 200) {
    res.setHeader("etag", PKRANGES_ETAG);
    if (req.headers["if-none-match"]) {
      res.statusCode = 304;
      return undefined;
    }
  }
  return body;
}

async function queryDocuments(account, req, res, params) {
  const header = partitionFromHeader(req);
  if (!header) return handlers.queryDocuments(account, req, res, params);
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  return queryPartition(collection, req, res, header);
}

const replacements = new Map([
  [handlers.queryDocuments, queryDocuments],
  [handlers.readPartitionKeyRanges, readPartitionKeyRanges],
  [handlers.readDocument, readDocument],
  [handlers.readDocuments, readDocumentsOrChangeFeed],
  [handlers.batchDocuments, batch],
  [handlers.replaceCollection, replaceCollection],
]);

function isQuery(req) {
  const flag = String(req.headers["x-ms-documentdb-isquery"] || "").toLowerCase() === "true";
  return flag || req.headers["content-type"] === "application/query+json";
}

function send(req, res, body) {
  let payload = body;
  if (res.statusCode >= 400 && (!payload || typeof payload !== "object" || !payload.code)) {
    const message = payload && typeof payload === "object" ? payload.message || "" : "";
    payload = { code: ERROR_CODES[res.statusCode] || "Error", message };
  }
  if (payload && payload._etag && !res.getHeader("etag")) res.setHeader("etag", payload._etag);
  res.setHeader("content-type", "application/json");
  res.setHeader("content-location", `https://${req.headers.host}${req.url}`);
  res.setHeader("x-ms-activity-id", randomUUID());
  res.setHeader("x-ms-request-charge", "1");
  if (res.statusCode === 304 || res.statusCode === 204 || payload === undefined) {
    res.end();
  } else {
    res.end(JSON.stringify(payload));
  }
}

// getAccount() returns the account once it is ready; onMutation() is called after a write.
// trace(req, res) is called after each response when set (the launcher's --trace).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// latencyMs > 0 holds every response that long after it is computed: a network round trip.
function createRequestHandler({ getAccount, onMutation, trace = null, latencyMs = 0 }) {
  async function handle(req, res) {
    if (trace) res.on("finish", () => trace(req, res));
    const account = getAccount();
    if (!account) {
      res.statusCode = 503;
      return send(req, res, { code: "ServiceUnavailable", message: "starting" });
    }
    const matched = route(req);
    if (!matched) {
      res.statusCode = 400;
      return send(req, res, { code: "BadRequest", message: "no route" });
    }
    const [params, upstreamHandler] = matched;
    if (params.collId !== undefined) {
      const collection = collectionOf(account, params);
      if (collection && ttl.purgeExpired(collection) > 0) onMutation();
    }
    const handler = replacements.get(upstreamHandler) || upstreamHandler;
    let body;
    try {
      body = await handler(account, req, res, params);
    } catch (err) {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      res.statusCode = 500;
      body = { code: "InternalServerError", message: String(err && err.message) };
    }
    if (req.method !== "GET" && !isQuery(req) && res.statusCode < 400) onMutation();
    if (latencyMs > 0) await sleep(latencyMs);
    return send(req, res, body);
  }
  return (req, res) => {
    handle(req, res).catch((err) => {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end();
      }
    });
  };
}

module.exports = { createRequestHandler };
