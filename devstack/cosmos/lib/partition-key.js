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

// Whether this server can compute EPKs for the container (hash v1 is not implemented).
function supportsEpk(collectionData) {
  const def = definitionOf(collectionData);
  return def.kind === "MultiHash" || def.version === 2;
}

function partitionKeyValues(collectionData, doc) {
  return definitionOf(collectionData).paths.map((p) => getValue(p.slice(1).split("/"), doc));
}

function effectivePartitionKey(collectionData, values) {
  const def = definitionOf(collectionData);
  if (!values.length) return "";
  if (def.kind === "MultiHash") return values.map((v) => hashV2(componentBytes(v))).join("");
  return hashV2(Buffer.concat(values.map(componentBytes)));
}

module.exports = { effectivePartitionKey, partitionKeyValues, supportsEpk, murmur3x64x128 };
