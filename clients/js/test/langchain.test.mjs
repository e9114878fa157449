// JadeVectorStore (LangChain.js VectorStore) against a real `jvdb serve`, with a deterministic fake
// embedding: a text's vector is a bag of its words hashed into 16 dimensions, so a text is nearest to
// itself and texts sharing words are near each other.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Embeddings } from "@langchain/core/embeddings";
import { Document } from "@langchain/core/documents";
import { VectorStore } from "@langchain/core/vectorstores";
import { Client } from "jvdb";
import { JadeVectorStore } from "jvdb/langchain";
import { startServer, needRoute } from "./server.mjs";

export class HashEmbeddings extends Embeddings {
  constructor(dim = 16) { super({}); this.dim = dim; this.calls = 0; }
  embed(text) {
    const v = new Array(this.dim).fill(0);
    for (const w of text.toLowerCase().split(/\W+/).filter(Boolean)) {
      let h = 2166136261;
      for (const ch of w) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
      v[h % this.dim] += 1;
    }
    v[0] += 0.01;                                   // never the zero vector (cosine refuses it)
    return v;
  }
  async embedDocuments(texts) { this.calls++; return texts.map((t) => this.embed(t)); }
  async embedQuery(text) { return this.embed(text); }
}

const TEXTS = ["the cat sat on the mat", "dogs chase cats in the park", "stock markets fell sharply today",
  "the central bank raised interest rates", "a recipe for tomato soup", "how to bake sourdough bread"];
const META = [{ topic: "pets", year: 2020 }, { topic: "pets", year: 2022 }, { topic: "finance", year: 2021 },
  { topic: "finance", year: 2023 }, { topic: "food", year: 2019 }, { topic: "food", year: 2024 }];

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("is a LangChain VectorStore", () => {
  const s = new JadeVectorStore(new HashEmbeddings(), { url: server.url, databaseName: "x" });
  assert.ok(s instanceof VectorStore);
  assert.equal(s._vectorstoreType(), "jadevectordb");
});

test("fromTexts, similarity search with scores and filters", async () => {
  const emb = new HashEmbeddings();
  const store = await JadeVectorStore.fromTexts(TEXTS, META, emb, { url: server.url, databaseName: "lc1" });
  const db = await new Client(server.url).getDatabase("lc1");
  assert.equal(db.vectorDimension, 16);
  assert.equal(db.distanceMetric, "cosine");
  const top = await store.similaritySearch("the cat sat on the mat", 1);
  assert.equal(top[0].pageContent, "the cat sat on the mat");
  assert.deepEqual(top[0].metadata, { topic: "pets", year: 2020 });
  assert.equal(typeof top[0].id, "string");
  const scored = await store.similaritySearchWithScore("interest rates of the bank", 2);
  assert.equal(scored[0][0].pageContent, "the central bank raised interest rates");
  assert.ok(scored[0][1] >= scored[1][1] && scored[0][1] > 0.5, String(scored.map((x) => x[1])));
  const filtered = await store.similaritySearchVectorWithScore(emb.embed("the cat sat on the mat"), 6, { topic: "food" });
  assert.deepEqual(filtered.map(([d]) => d.metadata.topic), ["food", "food"]);
  const ranged = await store.similaritySearch("anything", 6, { year: { $gte: 2022 } });
  assert.deepEqual(ranged.map((d) => d.metadata.year).sort(), [2022, 2023, 2024]);
  const retrieved = await store.asRetriever({ k: 1, filter: { topic: "finance" } }).invoke("stock markets");
  assert.equal(retrieved[0].pageContent, "stock markets fell sharply today");
});

test("addDocuments with ids replaces, addVectors, delete by ids", async () => {
  const emb = new HashEmbeddings();
  const store = new JadeVectorStore(emb, { url: server.url, databaseName: "lc2", metric: "cosine" });
  const ids = await store.addDocuments(TEXTS.map((t, i) => new Document({ pageContent: t, metadata: META[i] })),
    { ids: TEXTS.map((_, i) => `doc-${i}`) });
  assert.deepEqual(ids, TEXTS.map((_, i) => `doc-${i}`));
  const c = new Client(server.url);
  assert.equal(await c.count("lc2"), 6);
  const stored = await c.get("lc2", "doc-4");
  assert.deepEqual(stored.metadata, { topic: "food", year: 2019, text: "a recipe for tomato soup" });
  // same id again: replaced, not duplicated; a document's own id is used when no ids are given
  await store.addDocuments([new Document({ pageContent: "a recipe for onion soup", metadata: { topic: "food" }, id: "doc-4" })]);
  assert.equal(await c.count("lc2"), 6);
  assert.equal((await c.get("lc2", "doc-4")).metadata.text, "a recipe for onion soup");
  const [vid] = await store.addVectors([emb.embed("quantum physics lecture")], [new Document({ pageContent: "quantum physics lecture", metadata: {} })]);
  assert.match(vid, /^[0-9a-f-]{36}$/);
  assert.equal((await store.similaritySearch("quantum physics lecture", 1))[0].id, vid);
  await store.delete({ ids: ["doc-0", "doc-1", vid] });
  assert.equal(await c.count("lc2"), 4);
  const pets = await store.similaritySearch("cat", 10, { topic: "pets" });
  assert.equal(pets.length, 0);
  await assert.rejects(store.addVectors([[1, 2]], []), TypeError);
  assert.deepEqual(await store.addVectors([], []), []);
});

test("delete by filter", async (t) => {
  const store = await JadeVectorStore.fromTexts(TEXTS, META, new HashEmbeddings(), { url: server.url, databaseName: "lc3" });
  const done = await needRoute(t, async () => { await store.delete({ filter: { topic: "finance" } }); return true; });
  if (!done) return;
  assert.equal(await new Client(server.url).count("lc3"), 4);
});

test("fromExistingIndex and errors", async () => {
  await JadeVectorStore.fromTexts(TEXTS, {}, new HashEmbeddings(), { url: server.url, databaseName: "lc4", ids: TEXTS.map((_, i) => `t${i}`) });
  const store = await JadeVectorStore.fromExistingIndex(new HashEmbeddings(), { url: server.url, databaseName: "lc4" });
  assert.equal((await store.similaritySearch("how to bake sourdough bread", 1))[0].id, "t5");
  await assert.rejects(JadeVectorStore.fromExistingIndex(new HashEmbeddings(), { url: server.url, databaseName: "nope" }),
    (e) => e.code === "NOT_FOUND" && e.status === 404);
  await assert.rejects(store.similaritySearch("x", 2, { topic: { $regex: "a" } }), (e) => e.code === "INVALID_ARGUMENT");
  await assert.rejects(store.addVectors([[1, 2, 3]], [new Document({ pageContent: "short" })]),
    (e) => e.code === "INVALID_ARGUMENT" && /dimension 16/.test(e.serverMessage));
});
