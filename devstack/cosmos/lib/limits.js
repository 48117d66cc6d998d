"use strict";
// What Azure refuses, checked before upstream stores anything:
// - an item over 2 MB, a batch request over 2 MB: 413 RequestEntityTooLarge
//   https://learn.microsoft.com/azure/cosmos-db/concepts-limits#per-item-limits
// - TTL values: a container's defaultTtl and an item's ttl are -1 or a positive number of
//   seconds (at most 2^31 - 1); anything else (0, -10, null, text) is 400 BadRequest
//   https://learn.microsoft.com/azure/cosmos-db/nosql/time-to-live
// Also the default indexing policy a container gets (and a patch condition's evaluation).
const MAX_DOCUMENT_BYTES = 2 * 1024 * 1024;
const MAX_BATCH_BYTES = 2 * 1024 * 1024;
const MAX_TTL = 2147483647;
// Ids: databases and containers below 256 characters, items below 1024 (the SDK itself refuses
// "/", "\\", "?", "#" and a trailing space or newline before sending).
const MAX_NAME_CHARS = 255;
const MAX_ITEM_ID_CHARS = 1023;
const ETAG_PATH = '/"_etag"/?';

const validTtl = (value) =>
  Number.isInteger(value) && (value === -1 || (value > 0 && value <= MAX_TTL));

function tooLarge(res) {
  res.statusCode = 413;
  return { code: "RequestEntityTooLarge", message: "Request size is too large." };
}

// A message for an id Azure refuses, or null.
function invalidId(body, max) {
  if (!body || typeof body !== "object" || typeof body.id !== "string") return null;
  if (body.id.length > 0 && body.id.length <= max) return null;
  // Azure's wording: "less than '255'" for names (at most 255), "'1024'" for items.
  const stated = max === MAX_NAME_CHARS ? max : max + 1;
  return `The input name '${body.id.slice(0, 40)}...' is invalid. Ensure to provide a unique non-empty string less than '${stated}' characters.`;
}

// A message for a container body Azure refuses, or null.
function invalidContainer(body) {
  if (!body || typeof body !== "object") return null;
  if ("defaultTtl" in body && body.defaultTtl !== null && body.defaultTtl !== undefined) {
    if (!validTtl(body.defaultTtl)) {
      return `The value of DefaultTimeToLive ${JSON.stringify(body.defaultTtl)} is invalid: it must be -1 or a positive number of seconds.`;
    }
  }
  return null;
}

// A message for a document body Azure refuses, or null.
function invalidDocument(body) {
  if (!body || typeof body !== "object" || Array.isArray(body)) return null;
  if ("ttl" in body && !validTtl(body.ttl)) {
    return `The value of the time to live ${JSON.stringify(body.ttl)} is invalid: it must be -1 or a positive number of seconds.`;
  }
  return null;
}

// Azure's default indexing policy, filled in where the request leaves a part out. Index kinds
// on paths (`indexes`) are a retired setting Azure drops.
function withDefaultIndexing(policy) {
  const result = { indexingMode: "consistent", automatic: true, ...(policy || {}) };
  if (typeof result.indexingMode === "string") result.indexingMode = result.indexingMode.toLowerCase();
  if (result.indexingMode === "none") {
    result.automatic = false;
    result.includedPaths = [];
    result.excludedPaths = [];
    return result;
  }
  if (!Array.isArray(result.includedPaths)) result.includedPaths = [{ path: "/*" }];
  result.includedPaths = result.includedPaths.map((p) => {
    if (!p || typeof p !== "object") return p;
    const { indexes, ...kept } = p;
    return kept;
  });
  if (!Array.isArray(result.excludedPaths)) result.excludedPaths = [];
  if (!result.excludedPaths.some((p) => p && p.path === ETAG_PATH)) {
    result.excludedPaths = [...result.excludedPaths, { path: ETAG_PATH }];
  }
  return result;
}

// Whether a patch condition (`from <alias> where <predicate>`) holds for `doc`; null when it
// cannot be evaluated (Azure answers 400).
function conditionHolds(collection, doc, condition) {
  const match = /^\s*from\s+([A-Za-z_][A-Za-z0-9_]*)\s+where\s+([\s\S]+)$/i.exec(condition);
  if (!match) return null;
  const [, alias, predicate] = match;
  try {
    const query = collection.documents._getQuery(`SELECT * FROM ${alias} WHERE ${predicate}`);
    return query.exec([doc], { udf: collection.documents._userDefinedFunctions() }).result.length > 0;
  } catch (err) {
    return null;
  }
}

module.exports = {
  MAX_NAME_CHARS,
  MAX_ITEM_ID_CHARS,
  invalidId,
  MAX_DOCUMENT_BYTES,
  MAX_BATCH_BYTES,
  tooLarge,
  invalidContainer,
  invalidDocument,
  withDefaultIndexing,
  conditionHolds,
};
