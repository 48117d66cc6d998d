"use strict";
// Time to live: container `defaultTtl` (absent = off, -1 = on without a default, N seconds) and
// item `ttl` (N seconds, -1 = never; only honoured when the container has TTL on).
// https://learn.microsoft.com/azure/cosmos-db/nosql/time-to-live
// Expired documents are removed before any request touches their container (lazy) and by a
// periodic sweep; removal is a plain delete, so they leave reads, queries and the change feed.
const { onDocumentWrite } = require("./lsn");

// Per container: the earliest moment (epoch seconds) at which some document may expire.
const nextExpiry = new WeakMap();

function ttlOf(collectionData, doc) {
  const containerTtl = collectionData.defaultTtl;
  if (containerTtl === undefined || containerTtl === null) return null;
  if (typeof doc.ttl === "number" && doc.ttl !== 0) return doc.ttl === -1 ? null : doc.ttl;
  return containerTtl === -1 ? null : containerTtl;
}

function expiresAt(collectionData, doc) {
  const ttl = ttlOf(collectionData, doc);
  return ttl === null ? Infinity : doc._ts + ttl;
}

onDocumentWrite((collection, doc) => {
  const data = collection.read();
  if (!data) return;
  const at = expiresAt(data, doc);
  const known = nextExpiry.has(collection) ? nextExpiry.get(collection) : 0;
  nextExpiry.set(collection, Math.min(known, at));
});

// Forget what is known about a container (its TTL settings changed, or it was just loaded).
function invalidate(collection) {
  nextExpiry.delete(collection);
}

// Remove the expired documents of one container; returns how many went.
function purgeExpired(collection, nowSeconds = Date.now() / 1000) {
  const data = collection.read();
  if (!data) return 0;
  const due = nextExpiry.has(collection) ? nextExpiry.get(collection) : 0;
  if (nowSeconds < due) return 0;
  const documents = collection.documents;
  let earliest = Infinity;
  const expired = [];
  for (const item of documents._data.values()) {
    const doc = item.read();
    const at = expiresAt(data, doc);
    if (nowSeconds >= at) expired.push(doc);
    else earliest = Math.min(earliest, at);
  }
  for (const doc of expired) documents.delete(doc._rid, undefined);
  nextExpiry.set(collection, earliest);
  return expired.length;
}

module.exports = { purgeExpired, invalidate, expiresAt };
