"use strict";
// Physical partitions (partition key ranges) of a container and the scoping of reads to them.
//
// A container has N ranges that cover the effective partition key (EPK) space "" to "FF"; a
// document lives in the range that holds the EPK of its partition key. The count is the
// launcher's --partitions for a new container, or more when the container is created with
// throughput that Azure would spread over several partitions (ceil(RU/s / 6000) above
// 10 000 RU/s manual; ceil(max RU/s / 10 000) autoscale).
// https://learn.microsoft.com/azure/cosmos-db/partitioning-overview#physical-partitions
// Hash v2 EPKs are 32 hex digits with the top two bits clear, so the hashed keys fill
// [0, 0x40 << 120): the ranges split that interval evenly (the last one ends at "FF").
// A split (raising a container's throughput) replaces a range by two children that name it as
// parent; a request for a range id that is gone is answered 410 with sub-status 1002, and the
// SDK then re-reads the ranges — as against Azure.
const {
  effectivePartitionKey,
  partitionKeyValues,
  isHashV1,
  hashV1Bound,
} = require("./partition-key");

const LAYOUT = Symbol("devstack.partitions");
const HASH_SPACE = 0x40n << 120n;
const EPK_MAX = "FF";
const MAX_PARTITIONS = 64;

let defaultCount = 1;

class PartitionError extends Error {
  constructor(statusCode, code, message, subStatus) {
    super(message);
    this.statusCode = statusCode;
    this.code = code;
    this.subStatus = subStatus;
  }
}

function setDefaultCount(count) {
  if (!Number.isInteger(count) || count < 1 || count > MAX_PARTITIONS) {
    throw new Error(`invalid partition count ${count} (1-${MAX_PARTITIONS})`);
  }
  defaultCount = count;
}

const hex = (value) => value.toString(16).toUpperCase().padStart(32, "0");

// Ranges are kept as numeric intervals [lo, hi) of the hash space (BigInt as text, so they
// persist as JSON); their EPK bounds derive from it. Hash v2 / MultiHash: the 126-bit hash,
// written as 32 hex digits. Hash v1: the 32-bit hash, written as the v1 binary encoding of
// that number (what the SDK computes for a v1 key starts with the same bytes).
const spaceOf = (v1) => (v1 ? 1n << 32n : HASH_SPACE);

function bound(value, v1) {
  if (value <= 0n) return "";
  if (value >= spaceOf(v1)) return EPK_MAX;
  return v1 ? hashV1Bound(Number(value)) : hex(value);
}

function newRange(id, lo, hi, v1, parents) {
  return {
    id: String(id),
    minInclusive: bound(lo, v1),
    maxExclusive: bound(hi, v1),
    ridPrefix: Number(id),
    throughputFraction: 1,
    status: "online",
    parents,
    lo: String(lo),
    hi: String(hi),
  };
}

// Even split as the emulator does it: boundary i is i * floor(space / count).
function evenLayout(count, v1) {
  const space = spaceOf(v1);
  const step = space / BigInt(count);
  const ranges = [];
  for (let i = 0; i < count; i += 1) {
    const hi = i === count - 1 ? space : step * BigInt(i + 1);
    ranges.push(newRange(i, step * BigInt(i), hi, v1, []));
  }
  for (const r of ranges) r.throughputFraction = 1 / count;
  return { version: 1, nextId: count, v1, ranges };
}

// What the SDK sees of a range: the EPK bounds (v1 ones in lower case, as the SDK writes them).
function publicRange(layout, range) {
  const { lo, hi, ...visible } = range;
  if (layout.v1) {
    visible.minInclusive = range.minInclusive === EPK_MAX ? EPK_MAX : range.minInclusive.toLowerCase();
    visible.maxExclusive = range.maxExclusive === EPK_MAX ? EPK_MAX : range.maxExclusive.toLowerCase();
  }
  return visible;
}

// Partitions Azure gives a new container for its throughput request headers.
function countForThroughput(headers) {
  const manual = Number(headers["x-ms-offer-throughput"]);
  let count = 1;
  if (Number.isFinite(manual) && manual > 10000) count = Math.ceil(manual / 6000);
  const autopilot = headers["x-ms-cosmos-offer-autopilot-settings"];
  if (autopilot) {
    try {
      const max = Number(JSON.parse(autopilot).maxThroughput);
      if (Number.isFinite(max)) count = Math.max(count, Math.ceil(max / 10000));
    } catch (err) {
      // Not JSON: the throughput then decides nothing here.
    }
  }
  return Math.min(count, MAX_PARTITIONS);
}

function layoutOf(collection) {
  if (!collection[LAYOUT]) collection[LAYOUT] = evenLayout(defaultCount, isHashV1(collection.read()));
  return collection[LAYOUT];
}

// A new container: the launcher's count, or more for the throughput it was created with.
function initialise(collection, headers) {
  const count = Math.max(defaultCount, countForThroughput(headers || {}));
  collection[LAYOUT] = evenLayout(count, isHashV1(collection.read()));
}

function setLayout(collection, layout) {
  if (layout && Array.isArray(layout.ranges) && layout.ranges.length) collection[LAYOUT] = layout;
}

// Split the widest range in two until there are `count` ranges (children name their parent).
function splitTo(collection, count) {
  const layout = layoutOf(collection);
  const target = Math.min(count, MAX_PARTITIONS);
  let changed = false;
  while (layout.ranges.length < target) {
    let widest = 0;
    let width = -1n;
    layout.ranges.forEach((r, i) => {
      const w = BigInt(r.hi) - BigInt(r.lo);
      if (w > width) {
        width = w;
        widest = i;
      }
    });
    const parent = layout.ranges[widest];
    const middle = BigInt(parent.lo) + width / 2n;
    const parents = [...parent.parents, parent.id];
    const left = newRange(layout.nextId, BigInt(parent.lo), middle, layout.v1, parents);
    const right = newRange(layout.nextId + 1, middle, BigInt(parent.hi), layout.v1, parents);
    layout.nextId += 2;
    layout.ranges.splice(widest, 1, left, right);
    changed = true;
  }
  if (changed) {
    layout.version += 1;
    for (const r of layout.ranges) r.throughputFraction = 1 / layout.ranges.length;
  }
  return changed;
}

function rangeById(collection, id) {
  return layoutOf(collection).ranges.find((r) => r.id === String(id)) || null;
}

// A document's EPK, hashed once: stored documents are never changed in place (every write
// stores a new object) and a partition key value never changes, so the object is the key.
const epkCache = new WeakMap();

function epkOf(collectionData, doc) {
  let epk = epkCache.get(doc);
  if (epk === undefined) {
    epk = effectivePartitionKey(collectionData, partitionKeyValues(collectionData, doc));
    epkCache.set(doc, epk);
  }
  return epk;
}

const inRange = (epk, min, max) => epk >= min && (max === EPK_MAX || max === "" || epk < max);

// The range holding a partition key header value (e.g. `["a"]`), for session tokens.
function rangeIdForKey(collection, headerValue) {
  const layout = layoutOf(collection);
  if (layout.ranges.length === 1 || !headerValue) return layout.ranges[0].id;
  try {
    const wanted = JSON.parse(headerValue);
    const values = (Array.isArray(wanted) ? wanted : [wanted]).map((v) =>
      v && typeof v === "object" && !Object.keys(v).length ? undefined : v
    );
    const epk = effectivePartitionKey(collection.read(), values);
    const range = layout.ranges.find((r) => inRange(epk, r.minInclusive, r.maxExclusive));
    return range ? range.id : layout.ranges[0].id;
  } catch (err) {
    return layout.ranges[0].id;
  }
}

const header = (req, name) => {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
};

const isEmptyObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length;
const sameValue = (actual, wanted) =>
  isEmptyObject(wanted) ? actual === undefined : JSON.stringify(actual) === JSON.stringify(wanted);

// A predicate on documents for the scope a read request names, or null for the whole container:
//   x-ms-documentdb-partitionkey          one logical partition (a prefix of a hierarchical key)
//   x-ms-documentdb-partitionkeyrangeid   one physical partition (410/1002 when it has split)
//   x-ms-start-epk / x-ms-end-epk         a sub-range of EPKs (a feed range)
// `ignoreUndefinedKey`: the change feed's "[{}]" header means "no partition key given".
function scopeOf(collection, req, { ignoreUndefinedKey = false } = {}) {
  const data = collection.read();
  const tests = [];
  const pkHeader = header(req, "x-ms-documentdb-partitionkey");
  if (pkHeader && !(ignoreUndefinedKey && pkHeader === "[{}]")) {
    let wanted;
    try {
      wanted = JSON.parse(pkHeader);
    } catch (err) {
      throw new PartitionError(400, "BadRequest", `invalid partition key header ${pkHeader}`);
    }
    const values = Array.isArray(wanted) ? wanted : [wanted];
    tests.push((doc) => {
      const actual = partitionKeyValues(data, doc);
      return values.every((v, i) => sameValue(actual[i], v));
    });
  }
  const rangeId = header(req, "x-ms-documentdb-partitionkeyrangeid");
  let min = "";
  let max = EPK_MAX;
  if (rangeId !== undefined && rangeId !== "") {
    // The SDK may send "<collection rid>,<range id>".
    const id = String(rangeId).split(",").pop();
    const range = rangeById(collection, id);
    if (!range) {
      throw new PartitionError(410, "Gone", `partition key range ${id} is gone (split)`, 1002);
    }
    min = range.minInclusive;
    max = range.maxExclusive;
  }
  const start = header(req, "x-ms-start-epk");
  const end = header(req, "x-ms-end-epk");
  if (start !== undefined || end !== undefined) {
    const s = String(start || "").toUpperCase();
    const e = end === undefined || end === "" ? EPK_MAX : String(end).toUpperCase();
    if (s > min) min = s;
    if (e !== EPK_MAX && (max === EPK_MAX || e < max)) max = e;
  }
  if (min !== "" || max !== EPK_MAX) {
    tests.push((doc) => inRange(epkOf(data, doc), min, max));
  }
  if (!tests.length) {
    // Scoped to a range that spans the whole container: still a scoped read.
    const scoped = (rangeId !== undefined && rangeId !== "") || start !== undefined || end !== undefined;
    return scoped ? () => true : null;
  }
  return (doc) => tests.every((t) => t(doc));
}

module.exports = {
  PartitionError,
  setDefaultCount,
  initialise,
  layoutOf,
  setLayout,
  splitTo,
  countForThroughput,
  rangeIdForKey,
  scopeOf,
  publicRange,
};
