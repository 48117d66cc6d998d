"use strict";
// Optional persistence of the whole account to one JSON file: loaded at start, written
// atomically (temp file in the same folder, fsync, rename) shortly after writes and once more
// on shutdown. A crash of the server may lose the last debounce interval; a crash of a client
// loses nothing that the server acknowledged and then flushed.
//
// A snapshot costs what the whole account holds, whatever the write that asked for it: with a
// fixed interval, a steady trickle of small writes (a relay's checkpoints) made the server spend
// more and more of its time writing the file as the containers grew (a relay bench slowed by
// half over five rounds of 4,000 documents). The interval therefore follows the cost: at least
// SNAPSHOT_SHARE_INVERSE times the last snapshot's duration, so writing the file takes at most
// about a tenth of the server's time; a small account is still written 100 ms after a write.
const fs = require("fs");
const path = require("path");
const { Items } = require("./upstream");
const { currentLsn, setLsn, restoreDocument } = require("./lsn");
const ttl = require("./ttl");
const partitions = require("./partitions");
const { OFFER } = require("./offers");

const FORMAT_VERSION = 1;
// The wait after a snapshot is at least this many times what it took (see above).
const SNAPSHOT_SHARE_INVERSE = 9;
const rawSet = Items.prototype._set;

const values = (items) => [...items._data.values()].map((item) => item.read());

function snapshot(account) {
  return {
    format: FORMAT_VERSION,
    ridCount: account.databases._ridCount,
    databases: [...account.databases._data.values()].map((database) => ({
      data: database.read(),
      offer: database[OFFER],
      ridCount: database.collections._ridCount,
      collections: [...database.collections._data.values()].map((collection) => ({
        data: collection.read(),
        lsn: currentLsn(collection),
        partitions: partitions.layoutOf(collection),
        offer: collection[OFFER],
        ridCount: collection.documents._ridCount,
        documents: values(collection.documents),
        userDefinedFunctions: values(collection.userDefinedFunctions).map(({ id, body }) => ({
          id,
          body,
        })),
      })),
    })),
  };
}

function restore(account, state) {
  if (!state || state.format !== FORMAT_VERSION) {
    throw new Error(`unsupported data file format ${state && state.format}`);
  }
  for (const db of state.databases) {
    rawSet.call(account.databases, db.data);
    const database = account.database(db.data._rid);
    if (db.offer) database[OFFER] = db.offer;
    for (const coll of db.collections) {
      database.collections._set(coll.data);
      const collection = database.collection(coll.data._rid);
      for (const doc of coll.documents) restoreDocument(collection.documents, doc);
      for (const udf of coll.userDefinedFunctions) collection.userDefinedFunctions.create(udf);
      collection.documents._ridCount = coll.ridCount;
      setLsn(collection, coll.lsn);
      partitions.setLayout(collection, coll.partitions);
      if (coll.offer) collection[OFFER] = coll.offer;
      ttl.invalidate(collection);
    }
    database.collections._ridCount = db.ridCount;
  }
  account.databases._ridCount = state.ridCount;
}

class DataFile {
  constructor(file, account, { debounceMs = 100 } = {}) {
    this.file = path.resolve(file);
    this.account = account;
    this.debounceMs = debounceMs;
    this.delayMs = debounceMs;
    this.timer = null;
    this.dirty = false;
  }

  load() {
    if (!fs.existsSync(this.file)) return false;
    const text = fs.readFileSync(this.file, "utf8");
    if (!text.trim()) return false;
    restore(this.account, JSON.parse(text));
    return true;
  }

  markDirty() {
    this.dirty = true;
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, this.delayMs);
    }
  }

  flush() {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.dirty) return;
    this.dirty = false;
    const started = process.hrtime.bigint();
    const temp = `${this.file}.${process.pid}.tmp`;
    const fd = fs.openSync(temp, "w");
    try {
      fs.writeSync(fd, JSON.stringify(snapshot(this.account)));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, this.file);
    const tookMs = Number(process.hrtime.bigint() - started) / 1e6;
    this.delayMs = Math.max(this.debounceMs, SNAPSHOT_SHARE_INVERSE * tookMs);
  }
}

module.exports = { DataFile, snapshot, restore };
