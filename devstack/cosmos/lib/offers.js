"use strict";
// Throughput offers (`/offers`), enough for the SDK's get_throughput / replace_throughput on
// databases and containers created with offer_throughput (manual or autoscale). Raising a
// container's throughput past what its partitions hold splits them as Azure does
// (partitions.js: ceil(RU/s / 6000) above 10 000 RU/s); there is no rate limiting.
// https://learn.microsoft.com/rest/api/cosmos-db/offers
const { randomUUID } = require("crypto");
const partitions = require("./partitions");

const OFFER = Symbol("devstack.offer");

function offerFromHeaders(headers) {
  const manual = Number(headers["x-ms-offer-throughput"]);
  if (Number.isFinite(manual) && manual > 0) return { offerThroughput: manual };
  const autopilot = headers["x-ms-cosmos-offer-autopilot-settings"];
  if (autopilot) {
    try {
      const settings = JSON.parse(autopilot);
      return {
        offerThroughput: Math.max(400, Math.round(Number(settings.maxThroughput) / 10)),
        offerAutopilotSettings: settings,
      };
    } catch (err) {
      return null;
    }
  }
  return null;
}

// Record the throughput a database or container was created with (no header: none).
function remember(resource, headers) {
  const content = offerFromHeaders(headers);
  if (content) resource[OFFER] = { content, etag: randomUUID() };
}

function offerOf(resource, data) {
  const state = resource[OFFER];
  return {
    id: data._rid,
    _rid: data._rid,
    _self: `offers/${data._rid}/`,
    _etag: state.etag,
    _ts: data._ts,
    offerVersion: "V2",
    offerType: "Invalid",
    resource: data._self,
    offerResourceId: data._rid,
    content: { ...state.content, offerIsRUPerMinuteThroughputEnabled: false },
  };
}

function* resourcesWithOffers(account) {
  for (const database of account.databases._data.values()) {
    const data = database.read();
    if (database[OFFER]) yield { resource: database, data, collection: null };
    for (const collection of database.collections._data.values()) {
      if (collection[OFFER]) yield { resource: collection, data: collection.read(), collection };
    }
  }
}

function listOffers(account) {
  return [...resourcesWithOffers(account)].map(({ resource, data }) => offerOf(resource, data));
}

function findOffer(account, offerId) {
  for (const entry of resourcesWithOffers(account)) {
    if (entry.data._rid === offerId) return entry;
  }
  return null;
}

function replaceOffer(account, offerId, body) {
  const entry = findOffer(account, offerId);
  if (!entry) return { statusCode: 404, body: { code: "NotFound", message: "offer not found" } };
  const content = (body && body.content) || {};
  const state = entry.resource[OFFER];
  if (content.offerAutopilotSettings) {
    state.content = {
      offerThroughput: Math.max(400, Math.round(content.offerAutopilotSettings.maxThroughput / 10)),
      offerAutopilotSettings: content.offerAutopilotSettings,
    };
  } else if (Number.isFinite(Number(content.offerThroughput))) {
    state.content = { offerThroughput: Number(content.offerThroughput) };
  } else {
    return { statusCode: 400, body: { code: "BadRequest", message: "offerThroughput is missing" } };
  }
  state.etag = randomUUID();
  if (entry.collection) {
    const wanted = partitions.countForThroughput({
      "x-ms-offer-throughput": String(state.content.offerThroughput),
      "x-ms-cosmos-offer-autopilot-settings": state.content.offerAutopilotSettings
        ? JSON.stringify(state.content.offerAutopilotSettings)
        : undefined,
    });
    partitions.splitTo(entry.collection, wanted);
  }
  return { statusCode: 200, body: offerOf(entry.resource, entry.data) };
}

module.exports = { remember, listOffers, findOffer, offerOf, replaceOffer, OFFER };
