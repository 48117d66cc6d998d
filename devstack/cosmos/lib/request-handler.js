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
const { executeBatch, renameDocument } = require("./batch");
const { currentLsn, setLsn } = require("./lsn");
const { partitionKeyValues } = require("./partition-key");
const ttl = require("./ttl");
const { queryDocuments: runQuery } = require("./query");
const partitions = require("./partitions");
const offers = require("./offers");
const limits = require("./limits");
const scripts = require("./scripts");

const ERROR_CODES = {
  400: "BadRequest",
  404: "NotFound",
  409: "Conflict",
  410: "Gone",
  412: "PreconditionFailed",
  413: "RequestEntityTooLarge",
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
  // The SDK addresses a document by its _self link (a RID path) when given the item as a dict.
  if (!doc || (doc.id !== params.docId && doc._rid !== params.docId)) return notFound(res);
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
    if (err.subStatus) res.setHeader("x-ms-substatus", String(err.subStatus));
    return { code: err.code, message: err.message };
  }
}

async function batch(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  if (req.devstackBody.length > limits.MAX_BATCH_BYTES) return limits.tooLarge(res);
  const operations = await readJson(req);
  const result = executeBatch(collection, operations, partitionFromHeader(req));
  res.statusCode = result.statusCode;
  return result.body;
}

// Upstream rebuilds the container object on replace and so drops its documents; carry them over.
async function replaceCollection(account, req, res, params) {
  const invalid = limits.invalidContainer(await readJson(req));
  if (invalid) {
    res.statusCode = 400;
    return { code: "BadRequest", message: invalid };
  }
  const before = collectionOf(account, params);
  const body = await handlers.replaceCollection(account, req, res, params);
  const after = collectionOf(account, params);
  if (before && after && before !== after && res.statusCode < 400) {
    after.documents = before.documents;
    after.documents._parent = after;
    after.userDefinedFunctions = before.userDefinedFunctions;
    after.userDefinedFunctions._parent = after;
    setLsn(after, currentLsn(before));
    partitions.setLayout(after, partitions.layoutOf(before));
    if (before[offers.OFFER]) after[offers.OFFER] = before[offers.OFFER];
    ttl.invalidate(after);
  }
  return body;
}

// The SDK reads partition key ranges as a change feed (A-IM) and drains it until a 304. The
// etag is the layout's version: it changes when a range splits, so the SDK sees the children.
async function readPartitionKeyRanges(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const layout = partitions.layoutOf(collection);
  const etag = `"${layout.version}"`;
  res.setHeader("etag", etag);
  if (req.headers["a-im"] && req.headers["if-none-match"] === etag) {
    res.statusCode = 304;
    return undefined;
  }
  const data = collection.read();
  const ranges = layout.ranges.map((r) => ({
    ...partitions.publicRange(layout, r),
    _rid: `${data._rid}${r.id}`,
    _self: `${data._self.replace(/\/$/, "")}/pkranges/${r.id}/`,
    _etag: etag,
    _ts: data._ts,
  }));
  res.setHeader("x-ms-item-count", String(ranges.length));
  return { _rid: data._rid, PartitionKeyRanges: ranges, _count: ranges.length };
}

// A query over the whole container needs the cross-partition header, unless its text names
// the partition key (the SDK then gets the answer Azure gives it through the query plan).
function crossPartitionAllowed(collection, req) {
  if (String(req.headers["x-ms-documentdb-query-enablecrosspartition"]).toLowerCase() === "true") {
    return true;
  }
  const paths = ((collection.read().partitionKey || {}).paths || []);
  try {
    const text = JSON.parse(req.devstackBody.toString()).query;
    return !paths.length || collection.documents._getQuery(text).containsPartitionKeys(paths);
  } catch (err) {
    return true; // the query itself is then refused with its own error
  }
}

function crossPartitionRequired(res) {
  res.statusCode = 400;
  return {
    code: "BadRequest",
    message:
      "Cross partition query is required but disabled. Please set x-ms-documentdb-query-enablecrosspartition = true, specify x-ms-documentdb-partitionkey, or revise your query to avoid this exception.",
  };
}

async function queryDocuments(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  let inScope;
  try {
    inScope = partitions.scopeOf(collection, req);
    if (!inScope && !crossPartitionAllowed(collection, req)) return crossPartitionRequired(res);
  } catch (err) {
    if (!(err instanceof partitions.PartitionError)) throw err;
    res.statusCode = err.statusCode;
    if (err.subStatus) res.setHeader("x-ms-substatus", String(err.subStatus));
    return { code: err.code, message: err.message };
  }
  const started = process.hrtime.bigint();
  const result = await runQuery(collection, req, res, inScope);
  if (String(req.headers["x-ms-documentdb-populatequerymetrics"]).toLowerCase() === "true") {
    res.setHeader("x-ms-documentdb-query-metrics", queryMetrics(started, result));
  }
  return result;
}

// The query metrics header in Azure's format (key=value pairs joined by ";"); only the counts
// and the total time are measured here, the other phases are reported as 0.
function queryMetrics(started, result) {
  const ms = (Number(process.hrtime.bigint() - started) / 1e6).toFixed(2);
  const count = result && Array.isArray(result.Documents) ? result.Documents.length : 0;
  return [
    `totalExecutionTimeInMs=${ms}`,
    "queryCompileTimeInMs=0.00",
    "queryLogicalPlanBuildTimeInMs=0.00",
    "queryPhysicalPlanBuildTimeInMs=0.00",
    "queryOptimizationTimeInMs=0.00",
    "VMExecutionTimeInMs=0.00",
    "indexLookupTimeInMs=0.00",
    "documentLoadTimeInMs=0.00",
    "systemFunctionExecuteTimeInMs=0.00",
    "userFunctionExecuteTimeInMs=0.00",
    `retrievedDocumentCount=${count}`,
    "retrievedDocumentSize=0",
    `outputDocumentCount=${count}`,
    "outputDocumentSize=0",
    "writeOutputTimeInMs=0.00",
    "indexUtilizationRatio=1.00",
  ].join(";");
}

async function createCollection(account, req, res, params) {
  const body = await readJson(req);
  const invalid = limits.invalidId(body, limits.MAX_NAME_CHARS) || limits.invalidContainer(body);
  if (invalid) {
    res.statusCode = 400;
    return { code: "BadRequest", message: invalid };
  }
  if (body && typeof body === "object") {
    body.indexingPolicy = limits.withDefaultIndexing(body.indexingPolicy);
    req.devstackBody = Buffer.from(JSON.stringify(body));
  }
  const created = await handlers.createCollection(account, req, res, params);
  if (res.statusCode === 201 && created) {
    const collection = account.database(params.dbId).collection(created.id);
    partitions.initialise(collection, req.headers);
    // Without throughput of its own or of its database, a container gets 400 RU/s (Azure's
    // and the emulator's default for dedicated throughput).
    const database = account.database(params.dbId);
    const shared = Boolean(database[offers.OFFER]);
    const own = req.headers["x-ms-offer-throughput"] || req.headers["x-ms-cosmos-offer-autopilot-settings"];
    offers.remember(collection, own || shared ? req.headers : { "x-ms-offer-throughput": "400" });
  }
  return created;
}

async function createDatabase(account, req, res, params) {
  const invalid = limits.invalidId(await readJson(req), limits.MAX_NAME_CHARS);
  if (invalid) {
    res.statusCode = 400;
    return { code: "BadRequest", message: invalid };
  }
  const created = await handlers.createDatabase(account, req, res, params);
  if (res.statusCode === 201 && created) offers.remember(account.database(created.id), req.headers);
  return created;
}

// A document write: size and TTL checked as Azure does before upstream stores it.
function documentWrite(upstreamHandler) {
  return async (account, req, res, params) => {
    const collection = collectionOf(account, params);
    if (!collection) return notFound(res, "Collection");
    if (req.devstackBody.length > limits.MAX_DOCUMENT_BYTES) return limits.tooLarge(res);
    const body = await readJson(req);
    const invalid = limits.invalidId(body, limits.MAX_ITEM_ID_CHARS) || limits.invalidDocument(body);
    if (invalid) {
      res.statusCode = 400;
      return { code: "BadRequest", message: invalid };
    }
    return upstreamHandler(account, req, res, params);
  };
}

// A replace whose body carries another id than the path replaces that document with the body
// (Azure accepts it; the SDK's own tests rely on it). Same id: upstream's replace.
async function replaceDocument(account, req, res, params) {
  const body = await readJson(req);
  const collection = collectionOf(account, params);
  const header = partitionFromHeader(req);
  const key = header ? parsePartitionKey(header, params.docId) : params.docId;
  const current = collection.document(params.docId, key).read();
  if (!body || !current || body.id === current.id) {
    return handlers.replaceDocument(account, req, res, params);
  }
  const result = renameDocument(collection, current, body, req.headers["if-match"], header);
  res.statusCode = result.statusCode;
  return result.body;
}

// Patch: the condition (`filter_predicate`) is evaluated here against the one document, in
// whatever alias it is written (`from c where ...`, `from root where ...`): not met -> 412.
async function patchDocument(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const body = await readJson(req);
  if (body && !Array.isArray(body) && body.condition) {
    const header = partitionFromHeader(req);
    const key = header ? parsePartitionKey(header, params.docId) : params.docId;
    const doc = collection.document(params.docId, key).read();
    if (!doc) return notFound(res);
    const met = limits.conditionHolds(collection, doc, body.condition);
    if (met === null) {
      res.statusCode = 400;
      return { code: "BadRequest", message: `invalid patch condition: ${body.condition}` };
    }
    if (!met) {
      res.statusCode = 412;
      return {
        code: "PreconditionFailed",
        message: "Operation cannot be performed because one of the specified precondition is not met.",
      };
    }
    delete body.condition;
    req.devstackBody = Buffer.from(JSON.stringify(body));
  }
  return handlers.patchDocument(account, req, res, params);
}

// `container.delete_all_items_by_partition_key(pk)`: POST .../operations/partitionkeydelete.
function deleteAllByPartitionKey(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const header = partitionFromHeader(req);
  if (!header) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "partition key delete needs x-ms-documentdb-partitionkey" };
  }
  const inScope = partitions.scopeOf(collection, req);
  const documents = collection.documents;
  const doomed = [...documents._data.values()].map((i) => i.read()).filter((d) => inScope(d));
  for (const doc of doomed) documents.delete(doc._rid, undefined);
  if (doomed.length) setLsn(collection, currentLsn(collection) + 1);
  res.statusCode = 200;
  return undefined;
}

// Conflicts exist only with several write regions; this single-region server has none.
const COLLECTION_PATH = "^\\/dbs\\/([^/]+)\\/colls\\/([^/]+)";
const noConflicts = (account, req, res, params) => {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  if (isQuery(req) && !partitionFromHeader(req) && !crossPartitionAllowed(collection, req)) {
    return crossPartitionRequired(res);
  }
  res.setHeader("x-ms-item-count", "0");
  return { Conflicts: [], _count: 0 };
};
const conflictNotFound = (account, req, res) => notFound(res, "Conflict");
const collectionParams = (m) => ({ dbId: m[1], collId: m[2] });

async function scriptRequest(account, req, res, params) {
  const collection = collectionOf(account, params);
  if (!collection) return notFound(res, "Collection");
  const body = req.devstackBody.length ? await readJson(req) : undefined;
  if (params.kind === "sprocs" && params.scriptId && req.method === "POST") {
    const result = scripts.execute(collection, params.scriptId, body || [], partitionFromHeader(req));
    res.statusCode = result.statusCode;
    const logging = String(req.headers["x-ms-documentdb-script-enable-logging"]).toLowerCase() === "true";
    if (logging && result.log && result.log.length) {
      res.setHeader("x-ms-documentdb-script-log-results", encodeURIComponent(result.log.join("\n")));
    }
    if (result.statusCode < 400) onScriptWrite(collection);
    return result.body;
  }
  const upsert = String(req.headers["x-ms-documentdb-is-upsert"]).toLowerCase() === "true";
  const result = scripts.crud(collection, params.kind, req.method, params.scriptId, body, {
    upsert,
    query: isQuery(req),
  });
  res.statusCode = result.statusCode;
  return result.body;
}

// Set per handler: the launcher's onMutation (a stored procedure may write documents).
let onScriptWrite = () => {};

const scriptParams = (m) => ({
  dbId: m[1],
  collId: m[2],
  kind: m[3],
  scriptId: m[4],
});
const SCRIPT_PATH = /^\/dbs\/([^/]+)\/colls\/([^/]+)\/(sprocs|triggers)(?:\/([^/]+))?\/?$/;

const EXTRA_ROUTES = [
  ["GET", SCRIPT_PATH, scriptParams, scriptRequest],
  ["POST", SCRIPT_PATH, scriptParams, scriptRequest],
  ["PUT", SCRIPT_PATH, scriptParams, scriptRequest],
  ["DELETE", SCRIPT_PATH, scriptParams, scriptRequest],
  ["GET", new RegExp(`${COLLECTION_PATH}\\/conflicts\\/?$`), collectionParams, noConflicts],
  ["POST", new RegExp(`${COLLECTION_PATH}\\/conflicts\\/?$`), collectionParams, noConflicts],
  ["GET", new RegExp(`${COLLECTION_PATH}\\/conflicts\\/[^/]+\\/?$`), collectionParams, conflictNotFound],
  ["DELETE", new RegExp(`${COLLECTION_PATH}\\/conflicts\\/[^/]+\\/?$`), collectionParams, conflictNotFound],
  ["POST", /^\/dbs\/([^/]+)\/colls\/([^/]+)\/operations\/partitionkeydelete\/?$/, (m) => ({ dbId: m[1], collId: m[2] }), deleteAllByPartitionKey],
  ["GET", /^\/offers\/?$/, () => ({}), (account) => ({ Offers: listOffers(account), _count: listOffers(account).length })],
  ["POST", /^\/offers\/?$/, () => ({}), queryOffers],
  ["GET", /^\/offers\/([^/]+)\/?$/, (m) => ({ offerId: m[1] }), readOffer],
  ["PUT", /^\/offers\/([^/]+)\/?$/, (m) => ({ offerId: m[1] }), putOffer],
];

const listOffers = (account) => offers.listOffers(account);

async function queryOffers(account, req, res) {
  const body = await readJson(req);
  const all = listOffers(account);
  if (!body || !body.query) return { Offers: all, _count: all.length };
  const { Items } = require("./upstream");
  const query = Items.prototype._getQuery.call({ _queryCache: new Map() }, body.query);
  const { result } = query.exec(all, { parameters: body.parameters });
  res.setHeader("x-ms-item-count", String(result.length));
  return { Offers: result, _count: result.length };
}

function readOffer(account, req, res, params) {
  const entry = offers.findOffer(account, params.offerId);
  if (!entry) return notFound(res, "Offer");
  return offers.offerOf(entry.resource, entry.data);
}

async function putOffer(account, req, res, params) {
  const result = offers.replaceOffer(account, params.offerId, await readJson(req));
  res.statusCode = result.statusCode;
  return result.body;
}

function extraRoute(req) {
  let pathname;
  try {
    pathname = decodeURIComponent(String(req.url).split("?")[0]);
  } catch (err) {
    return null; // not ours: upstream's router answers it
  }
  for (const [method, pattern, toParams, handler] of EXTRA_ROUTES) {
    const m = req.method === method && pattern.exec(pathname);
    if (m) return [toParams(m), handler];
  }
  return null;
}

const replacements = new Map([
  [handlers.queryDocuments, queryDocuments],
  [handlers.createCollection, createCollection],
  [handlers.createDatabase, createDatabase],
  [handlers.createDocument, documentWrite(handlers.createDocument)],
  [handlers.upsertDocument, documentWrite(handlers.upsertDocument)],
  [handlers.replaceDocument, documentWrite(replaceDocument)],
  [handlers.patchDocument, patchDocument],
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

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

const isDocumentPath = (req) => /\/docs(\/|$|\?)/.test(String(req.url));

// Headers the SDK reads on document operations: the partition's LSN (`lsn`), the session token
// of the partition (`<range id>:-1#<lsn>`, what Azure sends in session consistency), the range
// id and the name path of the container (the SDK keys its session tokens by it). A write with
// `Prefer: return=minimal` (the SDK's no_response) gets no body, as from Azure.
function documentResponse(account, collection, params, req, res, body) {
  const lsn = String(currentLsn(collection));
  const rangeHeader = req.headers["x-ms-documentdb-partitionkeyrangeid"];
  const rangeId = rangeHeader
    ? String(rangeHeader).split(",").pop()
    : partitions.rangeIdForKey(collection, partitionFromHeader(req));
  const database = account.database(params.dbId).read();
  const data = collection.read();
  res.setHeader("lsn", lsn);
  res.setHeader("x-ms-session-token", `${rangeId}:-1#${lsn}`);
  res.setHeader("x-ms-documentdb-partitionkeyrangeid", rangeId);
  const altPath = database && data ? `dbs/${database.id}/colls/${data.id}` : "";
  // A header holds printable ASCII only: for other names the SDK does without it.
  if (altPath && /^[\x20-\x7e]*$/.test(altPath)) res.setHeader("x-ms-alt-content-path", altPath);
  const minimal = /return=minimal/i.test(String(req.headers.prefer || ""));
  if (minimal && res.statusCode < 300 && req.method !== "GET" && !isQuery(req)) {
    if (body && body._etag) res.setHeader("etag", body._etag);
    return undefined;
  }
  return body;
}

// getAccount() returns the account once it is ready; onMutation() is called after a write.
// trace(req, res) is called after each response when set (the launcher's --trace).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// latencyMs > 0 holds every response that long after it is computed: a network round trip.
function createRequestHandler({ getAccount, onMutation, trace = null, latencyMs = 0 }) {
  onScriptWrite = () => onMutation();
  async function handle(req, res) {
    if (trace) res.on("finish", () => trace(req, res));
    const account = getAccount();
    if (!account) {
      res.statusCode = 503;
      return send(req, res, { code: "ServiceUnavailable", message: "starting" });
    }
    if (req.method !== "GET" && req.method !== "HEAD" && req.method !== "DELETE") {
      req.devstackBody = await readBody(req);
    } else {
      req.devstackBody = Buffer.alloc(0);
    }
    const matched = extraRoute(req) || route(req);
    if (!matched) {
      // A resource type this server does not implement (users,
      // permissions, attachments, ...): 400 as Azure answers an operation an account does not
      // support, naming it.
      const feature = /\/(users|permissions|attachments|clientencryptionkeys)\b/.exec(req.url);
      res.statusCode = 400;
      return send(req, res, {
        code: "BadRequest",
        message: feature
          ? `${feature[1]} are not supported by this local Cosmos DB server (${req.method} ${req.url})`
          : `no route for ${req.method} ${req.url}`,
      });
    }
    const [params, upstreamHandler] = matched;
    const collection = params.collId !== undefined ? collectionOf(account, params) : null;
    if (collection && ttl.purgeExpired(collection) > 0) onMutation();
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
    // A delete is a write: it takes the next LSN of the container, as in Cosmos.
    if (collection && req.method === "DELETE" && params.docId !== undefined && res.statusCode === 204) {
      setLsn(collection, currentLsn(collection) + 1);
    }
    if (collection && isDocumentPath(req)) {
      body = documentResponse(account, collection, params, req, res, body);
    }
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
