"use strict";
// An LSN-ordered index of a container's documents, so that a change-feed page costs about what
// it returns instead of a scan and a sort of the whole container (which made a drain quadratic:
// 16,000 documents took 32 ms a page, most of it hashing partition keys of documents it then
// did not return).
//
// Entries are `{ lsn, rid }` in LSN order, appended as documents are written (lsn.js stamps
// every write with the container's next LSN). An entry is only a pointer: a reader keeps it
// when the document `rid` still exists with that same `_lsn`, so an overwritten or deleted
// document simply leaves a stale entry behind. Paths that put documents back without a new LSN
// (a transactional batch's commit or rollback, a data file) say so here; anything the index
// cannot follow (a stored procedure's rollback swaps the whole document map) makes it rebuild
// from the documents on the next read. Stale entries are compacted the same way once they
// outnumber the live ones.
const { onDocumentWrite, onDocumentRestore } = require("./lsn");

const INDEX = Symbol("devstack.changeFeedIndex");
// Rebuild when stale entries pass this share of the live documents (plus a floor).
const STALE_FACTOR = 2;
const STALE_FLOOR = 1024;

function rebuild(documents) {
  const entries = [];
  for (const [rid, item] of documents._data) {
    const doc = item.read();
    if (doc) entries.push({ lsn: doc._lsn || 0, rid });
  }
  entries.sort((a, b) => a.lsn - b.lsn);
  const index = { entries, data: documents._data, dirty: false };
  documents[INDEX] = index;
  return index;
}

// The index as it must be read: rebuilt when it cannot be trusted or is mostly stale.
function indexOf(documents) {
  const index = documents[INDEX];
  if (
    !index ||
    index.dirty ||
    index.data !== documents._data ||
    index.entries.length > STALE_FACTOR * documents._data.size + STALE_FLOOR
  ) {
    return rebuild(documents);
  }
  return index;
}

// A live index (one that a read would use as is), or undefined: nothing to keep up to date.
function liveIndex(documents) {
  const index = documents[INDEX];
  return index && !index.dirty && index.data === documents._data ? index : undefined;
}

const lastLsn = (entries) => (entries.length ? entries[entries.length - 1].lsn : -Infinity);

// First position whose LSN is greater than `lsn`.
function after(entries, lsn) {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (entries[middle].lsn <= lsn) low = middle + 1;
    else high = middle;
  }
  return low;
}

function hasEntry(entries, lsn, rid) {
  for (let i = after(entries, lsn - 1); i < entries.length && entries[i].lsn === lsn; i += 1) {
    if (entries[i].rid === rid) return true;
  }
  return false;
}

function append(documents, doc) {
  const index = liveIndex(documents);
  if (!index) return;
  const lsn = doc._lsn || 0;
  const last = lastLsn(index.entries);
  if (lsn < last) {
    // Put back under an older LSN: fine if its entry is still there, else rebuild.
    if (!hasEntry(index.entries, lsn, doc._rid)) index.dirty = true;
  } else if (lsn > last || !hasEntry(index.entries, lsn, doc._rid)) {
    // The last LSN again: the next document of a transactional batch being committed.
    index.entries.push({ lsn, rid: doc._rid });
  }
}

onDocumentWrite((collection, stamped) => append(collection.documents, stamped));
onDocumentRestore((documents, data) => append(documents, data));

// Drop the entries after `lsn`: a transactional batch is about to restamp (commit) or undo
// (rollback) the writes it made after that LSN.
function forgetAfter(documents, lsn) {
  const index = liveIndex(documents);
  if (index) index.entries.length = after(index.entries, lsn);
}

// The documents with `_lsn` greater than `floor` (every document when `floor` is null) that
// `inScope` accepts, in LSN order, each once in its latest version. Stops after `size`
// documents unless the next one shares the last one's LSN (a transaction is never cut);
// `more` says whether another accepted document follows.
function changesAfter(documents, floor, inScope, size) {
  const { entries } = indexOf(documents);
  const data = documents._data;
  const page = [];
  let more = false;
  for (let i = floor === null ? 0 : after(entries, floor); i < entries.length; i += 1) {
    const entry = entries[i];
    const item = data.get(entry.rid);
    const doc = item && item.read();
    if (!doc || (doc._lsn || 0) !== entry.lsn) continue;
    if (inScope && !inScope(doc)) continue;
    if (page.length >= size && doc._lsn !== page[page.length - 1]._lsn) {
      more = true;
      break;
    }
    page.push(doc);
  }
  return { page, more };
}

module.exports = { changesAfter, forgetAfter };
