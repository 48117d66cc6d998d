"use strict";
// Transactional batch (`POST .../docs` with x-ms-cosmos-is-batch-request): all operations share
// the partition key of the x-ms-documentdb-partitionkey header and commit all or nothing. On the
// first failure every write done so far is undone (documents and the container's LSN restored),
// the failing operation keeps its status and every other one reports 424 Failed Dependency,
// with HTTP 207 — the shape azure-cosmos turns into CosmosBatchOperationError.
// https://learn.microsoft.com/azure/cosmos-db/nosql/transactional-batch
const { documentOperations, patchOperation, parsePartitionKey } = require("./upstream");
const { currentLsn, setLsn, restoreDocument } = require("./lsn");
const { forgetAfter } = require("./feed-index");
const { partitionKeyValues } = require("./partition-key");

const MAX_OPERATIONS = 100;
const PARTITION_KEY_MISMATCH =
  "Partition key provided either doesn't correspond to definition in the collection or doesn't match partition key field values specified in the document.";

function failure(statusCode, code, message) {
  return { statusCode, body: { code, message } };
}

function runOperation(collection, op, partitionKeyHeader) {
  const body = op.resourceBody;
  const common = { partitionKey: partitionKeyHeader, ifMatch: op.ifMatch };
  switch (op.operationType) {
    case "Create":
      return documentOperations.createOperation(collection, { ...common, resourceBody: body });
    case "Upsert":
      return documentOperations.upsertOperation(collection, { ...common, resourceBody: body });
    case "Replace":
      if (body && op.id !== undefined && body.id !== op.id) return replaceRenaming(collection, op, common);
      return documentOperations.replaceOperation(collection, { ...common, resourceBody: body });
    case "Read":
      return documentOperations.readOperation(collection, { ...common, id: op.id });
    case "Delete":
      return documentOperations.deleteOperation(collection, { ...common, id: op.id });
    case "Patch":
      return patchOperation(collection, {
        ...common,
        id: op.id,
        operations: (body && body.operations) || [],
        condition: body ? body.condition : undefined,
      });
    default:
      return failure(400, "BadRequest", `operation type ${op.operationType} is not supported`);
  }
}

// A batch replace whose body carries another id replaces the document named by the operation
// with that body (Azure answers 200; the SDK's own tests do this).
function replaceRenaming(collection, op, common) {
  const existing = documentOperations.readOperation(collection, { ...common, id: op.id });
  if (existing.statusCode !== 200) return existing;
  return renameDocument(collection, existing.body, op.resourceBody, common.ifMatch, common.partitionKey);
}

// Replace `current` by `body`, which has another id: 200 with the new document.
function renameDocument(collection, current, body, ifMatch, partitionKeyHeader) {
  if (ifMatch && ifMatch !== current._etag) {
    return failure(412, "PreconditionFailed", "Operation cannot be performed because one of the specified precondition is not met.");
  }
  const removed = documentOperations.deleteOperation(collection, {
    partitionKey: partitionKeyHeader || "[{}]",
    id: current.id,
  });
  if (removed.statusCode >= 400) return removed;
  const created = documentOperations.createOperation(collection, { resourceBody: body });
  if (created.statusCode !== 201) {
    restoreDocument(collection.documents, current);
    return created;
  }
  return { statusCode: 200, body: created.body };
}

function idOf(op) {
  return op.id !== undefined ? op.id : op.resourceBody && op.resourceBody.id;
}

// A document body must carry the partition key the batch was sent with.
function wrongPartition(collectionData, op, expectedKey) {
  if (!op.resourceBody || !["Create", "Upsert", "Replace"].includes(op.operationType)) {
    return false;
  }
  // A document without its partition key property is in the partition `[{}]` (undefined).
  const actual = partitionKeyValues(collectionData, op.resourceBody).map((v) =>
    v === undefined ? {} : v
  );
  const expected = Array.isArray(expectedKey) ? expectedKey : [expectedKey];
  return JSON.stringify(actual) !== JSON.stringify(expected);
}

// Returns { statusCode, body } for the whole batch.
function executeBatch(collection, operations, partitionKeyHeader) {
  // Azure's messages, which the SDK's own tests look for.
  if (!Array.isArray(operations) || !operations.length) {
    return failure(400, "BadRequest", "Batch request has no operations.");
  }
  if (operations.length > MAX_OPERATIONS) {
    return failure(400, "BadRequest", "Batch request has more operations than what is supported.");
  }
  if (!partitionKeyHeader) {
    return failure(400, "BadRequest", "a batch needs the x-ms-documentdb-partitionkey header");
  }
  let expectedKey;
  try {
    expectedKey = JSON.parse(partitionKeyHeader);
  } catch (err) {
    return failure(400, "BadRequest", `invalid partition key header ${partitionKeyHeader}`);
  }
  const collectionData = collection.read();
  const pathCount = ((collectionData.partitionKey || {}).paths || ["/id"]).length;
  if ((Array.isArray(expectedKey) ? expectedKey : [expectedKey]).length !== pathCount) {
    return failure(400, "BadRequest", PARTITION_KEY_MISMATCH);
  }
  const documents = collection.documents;
  const lsnBefore = currentLsn(collection);
  const undo = [];
  const results = [];
  let failedAt = -1;
  for (let i = 0; i < operations.length; i += 1) {
    const op = operations[i] || {};
    const id = idOf(op);
    let result;
    if (wrongPartition(collectionData, op, expectedKey)) {
      result = failure(400, "BadRequest", PARTITION_KEY_MISMATCH);
    } else {
      const key = parsePartitionKey(partitionKeyHeader, id);
      const before = id === undefined ? undefined : documents._item("/id", id, key).read();
      undo.push({ id, key, before });
      const renamedTo = op.operationType === "Replace" && op.resourceBody && op.resourceBody.id;
      if (renamedTo && renamedTo !== id) {
        undo.push({ id: renamedTo, key, before: documents._item("/id", renamedTo, key).read() });
      }
      result = runOperation(collection, op, partitionKeyHeader);
    }
    results.push(result);
    if (result.statusCode >= 400) {
      failedAt = i;
      break;
    }
  }
  if (failedAt < 0) {
    // Cosmos commits a batch as one write: every document it wrote carries the same LSN.
    const batchLsn = lsnBefore + 1;
    const wrote = operations.some((op) => op && op.operationType !== "Read");
    if (wrote) {
      forgetAfter(documents, lsnBefore);
      for (const r of results) {
        const stored = r.body && r.body._rid && documents._data.get(r.body._rid);
        if (stored && stored.read()._etag === r.body._etag && r.body._lsn > lsnBefore) {
          r.body = { ...r.body, _lsn: batchLsn };
          restoreDocument(documents, r.body);
        }
      }
      setLsn(collection, batchLsn);
    }
    return {
      statusCode: 200,
      body: results.map((r) => ({
        statusCode: r.statusCode,
        requestCharge: 1,
        eTag: r.body && r.body._etag,
        resourceBody: r.body,
      })),
    };
  }
  forgetAfter(documents, lsnBefore);
  for (const { id, key, before } of undo.reverse()) {
    if (id === undefined) continue;
    const now = documents._item("/id", id, key).read();
    if (now) documents.delete(now._rid, undefined);
    if (before) restoreDocument(documents, before);
  }
  setLsn(collection, lsnBefore);
  return {
    statusCode: 207,
    body: operations.map((_, i) =>
      i === failedAt
        ? { statusCode: results[i].statusCode, requestCharge: 0, resourceBody: results[i].body }
        : { statusCode: 424, requestCharge: 0 }
    ),
  };
}

module.exports = { executeBatch, renameDocument };
