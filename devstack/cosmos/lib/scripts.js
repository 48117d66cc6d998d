"use strict";
// Stored procedures and triggers: stored per container (create, read, replace, upsert, delete,
// list, query), and stored procedures executed in Node's `vm` against the documents of the
// request's logical partition, all or nothing, within 5 s (Azure's bound for a script).
// The server-side API offered is the part the SDK's tests and samples use:
// getContext().getResponse() (setBody, getBody, appendValue, appendBody),
// getContext().getCollection() (getSelfLink, createDocument, upsertDocument, readDocument,
// replaceDocument, deleteDocument, queryDocuments) and console.log (script log, returned when
// the request enables logging). Triggers are stored but never run.
// https://learn.microsoft.com/azure/cosmos-db/nosql/how-to-write-stored-procedures-triggers-udfs
const vm = require("vm");
const { Items, documentOperations } = require("./upstream");
const { currentLsn, setLsn } = require("./lsn");
const { partitionKeyValues } = require("./partition-key");

const STORES = Symbol("devstack.scripts");
const ResourceIdModule = require("@vercel/cosmosdb-server/lib/account/resource-id");
const ResourceId = ResourceIdModule.default || ResourceIdModule;
const ItemModule = require("@vercel/cosmosdb-server/lib/account/item");
const Item = ItemModule.default || ItemModule;

const KINDS = {
  sprocs: { byte: ResourceId.StoredProcedureByte, field: "storedProcedure", items: "StoredProcedures" },
  triggers: { byte: ResourceId.TriggerByte, field: "trigger", items: "Triggers" },
};

class ScriptItems extends Items {
  constructor(parent, kind) {
    super(parent, ["/id"]);
    this._kind = kind;
  }

  _newItem(data) {
    return new Item(data);
  }

  _rid(id) {
    const idBuffer = Buffer.alloc(8, 0);
    idBuffer.writeInt32LE(id, 0);
    idBuffer.writeUInt8((KINDS[this._kind].byte << 4) & 0xff, 7);
    const idString = ResourceId.bigNumberReadIntBE(idBuffer, 0, 8).toString();
    const rid = ResourceId.parse(this._parent.read()._rid);
    rid[KINDS[this._kind].field] = idString;
    return rid.toString();
  }

  _self(rid) {
    return `${this._parent.read()._self.replace(/\/$/, "")}/${this._kind}/${rid}/`;
  }
}

function storeOf(collection, kind) {
  if (!collection[STORES]) collection[STORES] = {};
  if (!collection[STORES][kind]) collection[STORES][kind] = new ScriptItems(collection, kind);
  return collection[STORES][kind];
}

const failure = (statusCode, code, message) => ({ statusCode, body: { code, message } });

function find(store, idOrRid) {
  const data = store._item("/id", idOrRid, idOrRid).read();
  return data && (data.id === idOrRid || data._rid === idOrRid) ? data : null;
}

// CRUD. Returns { statusCode, body }.
function crud(collection, kind, method, scriptId, body, { upsert = false, query = false } = {}) {
  const store = storeOf(collection, kind);
  if (!scriptId && method === "GET") {
    const all = [...store._data.values()].map((i) => i.read());
    return { statusCode: 200, body: { [KINDS[kind].items]: all, _count: all.length } };
  }
  if (!scriptId && method === "POST" && query) {
    const all = [...store._data.values()].map((i) => i.read());
    const { result } = store._getQuery(body.query).exec(all, { parameters: body.parameters });
    return { statusCode: 200, body: { [KINDS[kind].items]: result, _count: result.length } };
  }
  if (!scriptId && method === "POST") {
    if (!body || !body.id) return failure(400, "BadRequest", "missing id");
    const existing = find(store, body.id);
    if (existing && !upsert) return failure(409, "Conflict", "Resource with specified id already exists.");
    if (existing) return { statusCode: 200, body: store.replace(body, existing) };
    return { statusCode: 201, body: store.create(body) };
  }
  const existing = find(store, scriptId);
  if (!existing) return failure(404, "NotFound", "Entity with the specified id does not exist in the system.");
  if (method === "GET") return { statusCode: 200, body: existing };
  if (method === "PUT") {
    if (body.id !== existing.id) return failure(400, "BadRequest", "replacing id is not allowed");
    return { statusCode: 200, body: store.replace(body, existing) };
  }
  if (method === "DELETE") {
    store.delete(existing._rid, existing._rid);
    return { statusCode: 204, body: undefined };
  }
  return failure(400, "BadRequest", `${method} is not supported on ${kind}`);
}

class ScriptError extends Error {}

function collectionApi(collection, partitionKeyHeader) {
  const expected = JSON.stringify(JSON.parse(partitionKeyHeader || "[{}]"));
  const keyOf = (doc) =>
    JSON.stringify(partitionKeyValues(collection.read(), doc).map((v) => (v === undefined ? {} : v)));
  const idFromLink = (link) => String(link).replace(/\/$/, "").split("/").pop();
  const call = (callback, result) => {
    if (result.statusCode >= 400) {
      const err = new ScriptError(result.body && result.body.message ? result.body.message : "error");
      err.number = result.statusCode;
      if (callback) callback(err);
      else throw err;
    } else if (callback) {
      callback(undefined, result.body, {});
    }
    return true;
  };
  const last = (args) => args.filter((a) => typeof a === "function").pop();
  const write = (operation, doc, args) => {
    if (keyOf(doc) !== expected) {
      throw new ScriptError("Requests originating from scripts cannot reference partition keys other than the one for which client request was submitted.");
    }
    return call(last(args), operation(collection, { resourceBody: doc, partitionKey: partitionKeyHeader }));
  };
  return {
    getSelfLink: () => collection.read()._self,
    createDocument: (link, doc, ...args) => write(documentOperations.createOperation, doc, args),
    upsertDocument: (link, doc, ...args) => write(documentOperations.upsertOperation, doc, args),
    replaceDocument: (link, doc, ...args) => write(documentOperations.replaceOperation, doc, args),
    readDocument: (link, ...args) =>
      call(last(args), documentOperations.readOperation(collection, { id: idFromLink(link), partitionKey: partitionKeyHeader })),
    deleteDocument: (link, ...args) =>
      call(last(args), documentOperations.deleteOperation(collection, { id: idFromLink(link), partitionKey: partitionKeyHeader })),
    queryDocuments: (link, query, ...args) => {
      const spec = typeof query === "string" ? { query } : query;
      const docs = [...collection.documents._data.values()].map((i) => i.read()).filter((d) => keyOf(d) === expected);
      const { result } = collection.documents._getQuery(spec.query).exec(docs, { parameters: spec.parameters });
      return call(last(args), { statusCode: 200, body: result });
    },
  };
}

// Execute a stored procedure; returns { statusCode, body, log }.
function execute(collection, scriptId, params, partitionKeyHeader) {
  const sproc = find(storeOf(collection, "sprocs"), scriptId);
  if (!sproc) return failure(404, "NotFound", "Entity with the specified id does not exist in the system.");
  const documents = collection.documents;
  const saved = { data: new Map(documents._data), index: new Map(documents._index), lsn: currentLsn(collection) };
  let body;
  const log = [];
  const response = {
    setBody: (value) => {
      body = value;
    },
    getBody: () => body,
    appendValue: (name, value) => {
      body = `${body === undefined ? "" : body}${value}`;
    },
    appendBody: (value) => {
      body = `${body === undefined ? "" : body}${value}`;
    },
  };
  const format = (text, ...values) =>
    [String(text).replace(/%s/g, () => String(values.length ? values.shift() : "")), ...values].join(" ");
  const context = {
    getContext: () => ({
      getResponse: () => response,
      getCollection: () => collectionApi(collection, partitionKeyHeader),
      getRequest: () => ({ getBody: () => params }),
    }),
    console: { log: (...args) => log.push(format(...args)) },
  };
  try {
    const fn = vm.runInNewContext(`(${sproc.body})`, context, { timeout: 5000 });
    vm.runInNewContext("fn.apply(null, params)", { ...context, fn, params: Array.isArray(params) ? params : [params] }, { timeout: 5000 });
  } catch (err) {
    documents._data = saved.data;
    documents._index = saved.index;
    setLsn(collection, saved.lsn);
    const message = err && err.message ? err.message : String(err);
    return { statusCode: 400, body: { code: "BadRequest", message: `Exception in the stored procedure: ${message}` }, log };
  }
  return { statusCode: 200, body: body === undefined ? "" : body, log };
}

module.exports = { crud, execute };
