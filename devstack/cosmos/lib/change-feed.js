"use strict";
// Latest-version change feed of one container, as the Cosmos REST API serves it to
// `GET .../docs` with `A-IM: Incremental feed`:
//   no If-None-Match            -> from the beginning
//   If-None-Match: *            -> from now (304 with the current etag)
//   If-None-Match: "<lsn>"      -> changes after that LSN (the etag of an earlier page)
//   If-Modified-Since: <date>   -> changes whose _ts is at or after that time
// Each document appears once, in its latest version, ordered by _lsn; deletes are not emitted.
// Scoping (partitions.js): a physical partition (x-ms-documentdb-partitionkeyrangeid), an EPK
// sub-range (x-ms-start-epk/x-ms-end-epk) or one partition key (x-ms-documentdb-partitionkey).
// https://learn.microsoft.com/rest/api/cosmos-db/list-documents (A-IM, If-None-Match headers)
const { currentLsn } = require("./lsn");
const { scopeOf, PartitionError } = require("./partitions");
const { changesAfter } = require("./feed-index");

const DEFAULT_PAGE_SIZE = 100;

class ChangeFeedError extends Error {
  constructor(statusCode, code, message, subStatus) {
    super(message);
    this.statusCode = statusCode;
    this.code = code;
    this.subStatus = subStatus;
  }
}

const header = (req, name) => {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
};

function isChangeFeedRequest(req) {
  return req.method === "GET" && Boolean(header(req, "a-im"));
}

function parseLsnEtag(value) {
  const text = String(value).trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
  if (!/^\d+$/.test(text)) {
    throw new ChangeFeedError(400, "BadRequest", `invalid change feed continuation ${value}`);
  }
  return Number(text);
}

const lsnEtag = (lsn) => `"${lsn}"`;

function pageSize(req) {
  const raw = header(req, "x-ms-max-item-count");
  const n = raw === undefined ? NaN : parseInt(raw, 10);
  return Number.isFinite(n) && n > 0 ? n : DEFAULT_PAGE_SIZE;
}

// Returns { statusCode, etag, documents } for one page of the feed.
function readChangeFeed(collection, req) {
  const mode = String(header(req, "a-im")).toLowerCase();
  if (mode !== "incremental feed") {
    // All-versions-and-deletes ("Full-Fidelity Feed") would need a log of every version.
    // Answered as by an account without that capability (what the SDK's tests recognise).
    throw new ChangeFeedError(
      400,
      "BadRequest",
      "Change feed mode 'All Versions and Deletes' must be enabled on the account to read the change feed in this mode; this local server does not implement it."
    );
  }
  const latest = currentLsn(collection);
  const ifNoneMatch = header(req, "if-none-match");
  if (ifNoneMatch !== undefined && ifNoneMatch.trim() === "*") {
    return { statusCode: 304, etag: lsnEtag(latest), documents: [] };
  }
  let floor = null;
  let since = null;
  if (ifNoneMatch !== undefined && ifNoneMatch !== "") {
    floor = parseLsnEtag(ifNoneMatch);
  } else if (header(req, "if-modified-since")) {
    since = Date.parse(header(req, "if-modified-since"));
    if (Number.isNaN(since)) {
      throw new ChangeFeedError(400, "BadRequest", "invalid If-Modified-Since header");
    }
  }
  let inScope;
  try {
    inScope = scopeOf(collection, req, { ignoreUndefinedKey: true });
  } catch (err) {
    if (!(err instanceof PartitionError)) throw err;
    throw new ChangeFeedError(err.statusCode, err.code, err.message, err.subStatus);
  }
  const accepted =
    since === null ? inScope : (doc) => doc._ts * 1000 >= since && (!inScope || inScope(doc));
  // The writes of one transactional batch share one LSN and the continuation is an LSN: a page
  // never ends inside a transaction (it may exceed the page size), or the rest of it would be
  // skipped by the next read. Cosmos DB returns a transaction's changes together too.
  const { page, more } = changesAfter(collection.documents, floor, accepted, pageSize(req));
  // A cut page resumes after its last item; otherwise everything up to `latest` has been seen.
  const upTo = more ? page[page.length - 1]._lsn : Math.max(latest, floor || 0);
  return { statusCode: page.length ? 200 : 304, etag: lsnEtag(upTo), documents: page };
}

module.exports = { isChangeFeedRequest, readChangeFeed, ChangeFeedError };
