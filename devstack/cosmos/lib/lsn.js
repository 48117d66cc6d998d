"use strict";
// Log sequence numbers: every document write in a container gets the next number of that
// container (`_lsn`), which is what the change feed orders by and hands out as its etag.
// Upstream funnels every document write (create, replace, upsert, patch) through
// Items#_set, so stamping there covers all write paths.
const { Items, Documents } = require("./upstream");

const LSN = Symbol("devstack.lsn");
const rawSet = Items.prototype._set;
const writeListeners = [];
const restoreListeners = [];

function currentLsn(collection) {
  return collection[LSN] || 0;
}

function setLsn(collection, value) {
  collection[LSN] = value;
}

function onDocumentWrite(listener) {
  writeListeners.push(listener);
}

function onDocumentRestore(listener) {
  restoreListeners.push(listener);
}

Documents.prototype._set = function stampedSet(data) {
  const collection = this._parent;
  const lsn = currentLsn(collection) + 1;
  setLsn(collection, lsn);
  const stamped = { ...data, _lsn: lsn };
  const result = rawSet.call(this, stamped);
  for (const listener of writeListeners) listener(collection, stamped);
  return result;
};

// Put a document back exactly as it was (batch rollback, loading a data file): no new LSN.
function restoreDocument(documents, data) {
  const result = rawSet.call(documents, data);
  for (const listener of restoreListeners) listener(documents, data);
  return result;
}

module.exports = { currentLsn, setLsn, onDocumentWrite, onDocumentRestore, restoreDocument };
