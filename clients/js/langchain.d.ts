// Type declarations of the LangChain.js vector store (langchain.js).
import { VectorStore } from "@langchain/core/vectorstores";
import type { DocumentInterface } from "@langchain/core/documents";
import type { EmbeddingsInterface } from "@langchain/core/embeddings";
import { Client, Filters } from "./index.js";

export interface JadeVectorStoreConfig {
  /** A client to use; else one is made from url and apiKey. */
  client?: Client;
  url?: string;
  apiKey?: string;
  databaseName: string;
  /** For a database the store creates (default "cosine"). */
  metric?: "cosine" | "euclidean" | "l2" | "dot";
  /** Metadata field that holds the document's text (default "text"). */
  textKey?: string;
  /** Create the database on the first add when it does not exist (default true). */
  createIfMissing?: boolean;
  /** fromTexts / fromDocuments: the ids to store the documents under. */
  ids?: string[];
}

export declare class JadeVectorStore extends VectorStore {
  FilterType: Filters;
  constructor(embeddings: EmbeddingsInterface, config: JadeVectorStoreConfig);
  client: Client;
  databaseName: string;
  textKey: string;
  _vectorstoreType(): string;
  ensureDatabase(dimension: number): Promise<void>;
  addVectors(vectors: number[][], documents: DocumentInterface[], options?: { ids?: string[]; batchSize?: number }): Promise<string[]>;
  addDocuments(documents: DocumentInterface[], options?: { ids?: string[]; batchSize?: number }): Promise<string[]>;
  similaritySearchVectorWithScore(query: number[], k: number, filter?: Filters): Promise<[DocumentInterface, number][]>;
  delete(params: { ids: string[] } | { filter: Filters }): Promise<void>;
  static fromTexts(texts: string[], metadatas: object[] | object, embeddings: EmbeddingsInterface, dbConfig: JadeVectorStoreConfig): Promise<JadeVectorStore>;
  static fromDocuments(docs: DocumentInterface[], embeddings: EmbeddingsInterface, dbConfig: JadeVectorStoreConfig): Promise<JadeVectorStore>;
  static fromExistingIndex(embeddings: EmbeddingsInterface, dbConfig: JadeVectorStoreConfig): Promise<JadeVectorStore>;
}
