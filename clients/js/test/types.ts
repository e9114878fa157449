// Compiled (not run) by types.test.mjs with `tsc --noEmit --strict`: the declarations describe the
// API as the tests and README use it, and misuse is a type error (the @ts-expect-error lines).
import { Client, JvdbError, UnsupportedError, type Vector, type SearchHit } from "jvdb";
import { JadeVectorStore } from "jvdb/langchain";
import { Embeddings } from "@langchain/core/embeddings";
import { VectorStore } from "@langchain/core/vectorstores";

async function use(): Promise<void> {
  const c = new Client("http://127.0.0.1:8080", { apiKey: "k", timeout: 1000 });
  await c.createDatabase("d", 4, { metric: "cosine", indexType: "HNSW" });
  const n: number = await c.upsert("d", [{ id: "a", values: [1, 2, 3, 4] }, ["b", [1, 2, 3, 4], { x: 1 }]]);
  const v: Vector | null = await c.get("d", "a");
  const hits: SearchHit[] = await c.search("d", [1, 2, 3, 4], { k: 3, filters: { x: { $gte: 1 } } });
  const deleted: number = await c.delete("d", { ids: ["a"] });
  for await (const x of c.scroll("d", { batchSize: 10 })) { const id: string = x.id; void id; }
  // @ts-expect-error the dimension is a number
  await c.createDatabase("d", "4");
  // @ts-expect-error delete takes {ids} or {filters}
  await c.delete("d", ["a"]);
  // @ts-expect-error metric names are the server's
  await c.createDatabase("d", 4, { metric: "manhattan" });
  try { await c.health(); } catch (e) {
    if (e instanceof UnsupportedError) { const code: string = e.code; void code; }
    if (e instanceof JvdbError) { const s: number | undefined = e.status; const i: number | undefined = e.index; void s; void i; }
  }
  void n; void v; void hits; void deleted;
}

class E extends Embeddings {
  constructor() { super({}); }
  async embedDocuments(t: string[]): Promise<number[][]> { return t.map(() => [1]); }
  async embedQuery(): Promise<number[]> { return [1]; }
}

async function lc(): Promise<void> {
  const store = await JadeVectorStore.fromTexts(["a"], [{}], new E(), { url: "http://x", databaseName: "d" });
  const vs: VectorStore = store;
  const r: [unknown, number][] = await store.similaritySearchVectorWithScore([1], 1, { topic: "x" });
  await store.delete({ ids: ["a"] });
  // @ts-expect-error databaseName is required
  new JadeVectorStore(new E(), { url: "http://x" });
  void vs; void r;
}
void use; void lc;
