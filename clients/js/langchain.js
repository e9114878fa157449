// JadeVectorStore — a LangChain.js VectorStore (@langchain/core) over the jvdb client.
//
// A Document is stored as one vector: its id (options.ids, else document.id, else a random UUID),
// its embedding, and as metadata the document's metadata fields at the top level plus its text
// under `textKey` ("text").  Keeping the fields at the top level is what lets LangChain filters be
// the server's filters unchanged ({"source": "a"}, {"year": {"$gte": 2020}}).  Scores are the
// server's: cosine similarity / inner product (larger is better) or squared Euclidean distance
// (smaller is better), best first either way.
import { VectorStore } from "@langchain/core/vectorstores";
import { Document } from "@langchain/core/documents";
import { Client, JvdbError } from "./index.js";

export class JadeVectorStore extends VectorStore {
  /**
   * @param embeddings an @langchain/core Embeddings
   * @param config {client?: Client, url?: string, apiKey?: string, databaseName: string,
   *                metric?: "cosine"|"euclidean"|"dot", textKey?: string, createIfMissing?: boolean}
   */
  constructor(embeddings, config) {
    super(embeddings, config);
    if (!config || typeof config.databaseName !== "string") throw new TypeError("JadeVectorStore needs config.databaseName");
    this.client = config.client ?? new Client(config.url ?? "http://127.0.0.1:8080", { apiKey: config.apiKey });
    this.databaseName = config.databaseName;
    this.metric = config.metric ?? "cosine";
    this.textKey = config.textKey ?? "text";
    this.createIfMissing = config.createIfMissing ?? true;
    this._ready = false;
  }

  _vectorstoreType() { return "jadevectordb"; }

  async ensureDatabase(dimension) {
    if (this._ready || !this.createIfMissing) return;
    try {
      await this.client.createDatabase(this.databaseName, dimension, { metric: this.metric });
    } catch (e) {
      if (!(e instanceof JvdbError && e.code === "ALREADY_EXISTS")) throw e;
    }
    this._ready = true;
  }

  async addVectors(vectors, documents, options = {}) {
    if (vectors.length !== documents.length) {
      throw new TypeError(`addVectors: ${vectors.length} vectors but ${documents.length} documents`);
    }
    if (options.ids && options.ids.length !== vectors.length) {
      throw new TypeError(`addVectors: ${options.ids.length} ids for ${vectors.length} vectors`);
    }
    if (vectors.length === 0) return [];
    await this.ensureDatabase(vectors[0].length);
    const ids = vectors.map((_, i) => options.ids?.[i] ?? documents[i].id ?? globalThis.crypto.randomUUID());
    const items = vectors.map((values, i) => ({
      id: ids[i],
      values,
      metadata: { ...(documents[i].metadata ?? {}), [this.textKey]: documents[i].pageContent },
    }));
    await this.client.upsert(this.databaseName, items, { batchSize: options.batchSize ?? 500 });
    return ids;
  }

  async addDocuments(documents, options = {}) {
    const vectors = await this.embeddings.embedDocuments(documents.map((d) => d.pageContent));
    return this.addVectors(vectors, documents, options);
  }

  async similaritySearchVectorWithScore(query, k, filter) {
    const hits = await this.client.search(this.databaseName, query, { k, filters: filter, includeMetadata: true });
    return hits.map((h) => {
      const { [this.textKey]: text, ...metadata } = h.metadata ?? {};
      return [new Document({ pageContent: typeof text === "string" ? text : "", metadata, id: h.id }), h.score];
    });
  }

  /** delete({ids}) or delete({filter}). */
  async delete(params = {}) {
    if (params.ids !== undefined) {
      await this.client.delete(this.databaseName, { ids: params.ids });
    } else if (params.filter !== undefined) {
      await this.client.delete(this.databaseName, { filters: params.filter });
    } else {
      throw new TypeError("JadeVectorStore.delete needs {ids} or {filter}");
    }
  }

  static async fromTexts(texts, metadatas, embeddings, dbConfig) {
    const docs = texts.map((text, i) => new Document({
      pageContent: text,
      metadata: Array.isArray(metadatas) ? (metadatas[i] ?? {}) : (metadatas ?? {}),
    }));
    return JadeVectorStore.fromDocuments(docs, embeddings, dbConfig);
  }

  static async fromDocuments(docs, embeddings, dbConfig) {
    const store = new JadeVectorStore(embeddings, dbConfig);
    await store.addDocuments(docs, { ids: dbConfig.ids });
    return store;
  }

  /** A store over a database that already exists (nothing is created). */
  static async fromExistingIndex(embeddings, dbConfig) {
    const store = new JadeVectorStore(embeddings, { ...dbConfig, createIfMissing: false });
    await store.client.getDatabase(store.databaseName);
    return store;
  }
}
