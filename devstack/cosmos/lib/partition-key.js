"use strict";
// Effective partition keys (EPK) as the Cosmos SDKs compute them, so that a change feed scoped
// by the SDK to one partition key (it sends the hashed range in x-ms-start-epk/x-ms-end-epk)
// can be filtered here. Hash v2: each component is written as a type marker plus payload, the
// bytes are hashed with MurmurHash3 x64 128 (seed 0), the 16 bytes are reversed and the top two
// bits cleared; MultiHash hashes each component separately and concatenates.
// Reference: azure-cosmos partition_key.py (_get_effective_partition_key_for_hash_partitioning_v2).
const { getValue } = require("./upstream");

const MASK64 = (1n << 64n) - 1n;
const C1 = 0x87c37b91114253d5n;
const C2 = 0x4cf5ad432745937fn;

const rotl64 = (x, r) => ((x << BigInt(r)) | (x >> BigInt(64 - r))) & MASK64;
const mul64 = (a, b) => (a * b) & MASK64;
const add64 = (a, b) => (a + b) & MASK64;

function fmix64(k) {
  let x = k;
  x ^= x >> 33n;
  x = mul64(x, 0xff51afd7ed558ccdn);
  x ^= x >> 33n;
  x = mul64(x, 0xc4ceb9fe1a85ec53n);
  x ^= x >> 33n;
  return x;
}

function readLe64(bytes, offset, count) {
  let value = 0n;
  for (let i = count - 1; i >= 0; i -= 1) value = (value << 8n) | BigInt(bytes[offset + i]);
  return value;
}

function murmur3x64x128(bytes) {
  let h1 = 0n;
  let h2 = 0n;
  const blocks = Math.floor(bytes.length / 16);
  for (let b = 0; b < blocks; b += 1) {
    let k1 = readLe64(bytes, b * 16, 8);
    let k2 = readLe64(bytes, b * 16 + 8, 8);
    k1 = mul64(rotl64(mul64(k1, C1), 31), C2);
    h1 ^= k1;
    h1 = add64(mul64(add64(rotl64(h1, 27), h2), 5n), 0x52dce729n);
    k2 = mul64(rotl64(mul64(k2, C2), 33), C1);
    h2 ^= k2;
    h2 = add64(mul64(add64(rotl64(h2, 31), h1), 5n), 0x38495ab5n);
  }
  const tail = blocks * 16;
  const rest = bytes.length - tail;
  if (rest > 8) {
    let k2 = readLe64(bytes, tail + 8, rest - 8);
    k2 = mul64(rotl64(mul64(k2, C2), 33), C1);
    h2 ^= k2;
  }
  if (rest > 0) {
    let k1 = readLe64(bytes, tail, Math.min(rest, 8));
    k1 = mul64(rotl64(mul64(k1, C1), 31), C2);
    h1 ^= k1;
  }
  const len = BigInt(bytes.length);
  h1 ^= len;
  h2 ^= len;
  h1 = add64(h1, h2);
  h2 = add64(h2, h1);
  h1 = fmix64(h1);
  h2 = fmix64(h2);
  h1 = add64(h1, h2);
  h2 = add64(h2, h1);
  return [h1, h2];
}

// One partition key component, as written for hashing v2.
function componentBytes(value) {
  if (value === undefined || (value && typeof value === "object" && !Object.keys(value).length)) {
    return Buffer.from([0x00]);
  }
  if (value === null) return Buffer.from([0x01]);
  if (value === false) return Buffer.from([0x02]);
  if (value === true) return Buffer.from([0x03]);
  if (typeof value === "number") {
    const out = Buffer.alloc(9);
    out[0] = 0x05;
    out.writeDoubleLE(value, 1);
    return out;
  }
  if (typeof value === "string") {
    return Buffer.concat([Buffer.from([0x08]), Buffer.from(value, "utf8"), Buffer.from([0xff])]);
  }
  throw new Error(`unsupported partition key component: ${JSON.stringify(value)}`);
}

function hashV2(bytes) {
  const [h1, h2] = murmur3x64x128(bytes);
  const hex = h2.toString(16).padStart(16, "0") + h1.toString(16).padStart(16, "0");
  const first = (parseInt(hex.slice(0, 2), 16) & 0x3f).toString(16).padStart(2, "0");
  return (first + hex.slice(2)).toUpperCase();
}

function definitionOf(collectionData) {
  const pk = (collectionData && collectionData.partitionKey) || {};
  return {
    paths: pk.paths && pk.paths.length ? pk.paths : ["/id"],
    kind: pk.kind || "Hash",
    version: pk.version || 1,
  };
}

const isHashV1 = (collectionData) => {
  const def = definitionOf(collectionData);
  return def.kind !== "MultiHash" && def.version !== 2;
};

// --- hash v1: MurmurHash3 x86 32 of the components, then the binary encoding of
// [hash, components truncated to 100 characters] (azure-cosmos partition_key.py,
// _get_effective_partition_key_for_hash_partitioning).
function murmur3x86x32(bytes) {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h1 = 0;
  const roundedEnd = bytes.length & ~3;
  for (let i = 0; i < roundedEnd; i += 4) {
    let k1 = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    k1 = Math.imul(k1, c1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
  }
  let k1 = 0;
  const rest = bytes.length & 3;
  if (rest === 3) k1 ^= bytes[roundedEnd + 2] << 16;
  if (rest >= 2) k1 ^= bytes[roundedEnd + 1] << 8;
  if (rest >= 1) {
    k1 ^= bytes[roundedEnd];
    k1 = Math.imul(k1, c1);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, c2);
    h1 ^= k1;
  }
  h1 ^= bytes.length;
  h1 ^= h1 >>> 16;
  h1 = Math.imul(h1, 0x85ebca6b);
  h1 ^= h1 >>> 13;
  h1 = Math.imul(h1, 0xc2b2ae35);
  h1 ^= h1 >>> 16;
  return h1 >>> 0;
}

const isUndefinedComponent = (v) =>
  v === undefined || (v !== null && typeof v === "object" && !Object.keys(v).length);

function hashingBytesV1(value) {
  if (value === true) return Buffer.from([0x03]);
  if (value === false) return Buffer.from([0x02]);
  if (isUndefinedComponent(value)) return Buffer.from([0x00]);
  if (value === null) return Buffer.from([0x01]);
  if (typeof value === "number") {
    const out = Buffer.alloc(9);
    out[0] = 0x05;
    out.writeDoubleLE(value, 1);
    return out;
  }
  if (typeof value === "string") {
    return Buffer.concat([Buffer.from([0x08]), Buffer.from(value, "utf8"), Buffer.from([0x00])]);
  }
  throw new Error(`unsupported partition key component: ${JSON.stringify(value)}`);
}

function doubleAsUint64(value) {
  const buffer = Buffer.alloc(8);
  buffer.writeDoubleLE(value, 0);
  const bits = buffer.readBigUInt64LE(0);
  const mask = 0x8000000000000000n;
  return bits < mask ? bits ^ mask : (~bits + 1n) & MASK64;
}

function binaryBytesV1(value) {
  if (value === true) return [0x03];
  if (value === false) return [0x02];
  if (isUndefinedComponent(value)) return [0x00];
  if (value === null) return [];
  if (typeof value === "number") {
    const out = [0x05];
    let payload = doubleAsUint64(value);
    out.push(Number(payload >> 56n));
    payload = (payload << 8n) & MASK64;
    let byte = 0;
    let first = true;
    while (payload !== 0n) {
      if (!first) out.push(byte);
      first = false;
      byte = Number(payload >> 56n) | 0x01;
      payload = (payload << 7n) & MASK64;
    }
    out.push(byte & 0xfe);
    return out;
  }
  const utf8 = Buffer.from(value, "utf8");
  const short = utf8.length <= 100;
  const out = [0x08];
  const count = short ? utf8.length : 101;
  for (let i = 0; i < count; i += 1) out.push((utf8[i] + 1) & 0xff);
  if (short) out.push(0x00);
  return out;
}

const truncateV1 = (v) => (typeof v === "string" ? v.slice(0, 100) : v);

function hashV1(values) {
  const components = values.map(truncateV1);
  const hash = murmur3x86x32(Buffer.concat(components.map(hashingBytesV1)));
  const bytes = [hash, ...components].flatMap(binaryBytesV1);
  return Buffer.from(bytes).toString("hex").toUpperCase();
}

// The EPK of a hash v1 boundary: a hash value alone (uppercase, as compared here).
const hashV1Bound = (hash) => Buffer.from(binaryBytesV1(hash)).toString("hex").toUpperCase();

function partitionKeyValues(collectionData, doc) {
  return definitionOf(collectionData).paths.map((p) => getValue(p.slice(1).split("/"), doc));
}

function effectivePartitionKey(collectionData, values) {
  const def = definitionOf(collectionData);
  if (!values.length) return "";
  if (def.kind === "MultiHash") return values.map((v) => hashV2(componentBytes(v))).join("");
  if (def.version !== 2) return hashV1(values);
  return hashV2(Buffer.concat(values.map(componentBytes)));
}

module.exports = {
  effectivePartitionKey,
  partitionKeyValues,
  isHashV1,
  hashV1Bound,
  murmur3x64x128,
};
