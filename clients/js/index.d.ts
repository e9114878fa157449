// Type declarations of the jvdb JavaScript client (index.js).

export type Metadata = Record<string, unknown>;
/** A condition on top-level metadata fields, all of which must hold (docs/API.md, Search). */
export type Filters = Record<string, unknown>;

export interface Vector {
  id: string;
  values: number[];
  metadata?: Metadata | null;
}
export type VectorLike = Vector | [string, ArrayLike<number>] | [string, ArrayLike<number>, Metadata | null | undefined];

export interface SearchHit {
  id: string;
  score: number;
  metadata?: Metadata | null;
  values?: number[] | null;
}

export interface ClientOptions {
  /** Sent as X-API-Key on every request. */
  apiKey?: string;
  /** Milliseconds per request (default 30000). */
  timeout?: number;
  /** How many times a 503 SERVER_BUSY is retried after its Retry-After (default 3). */
  retries?: number;
  fetch?: typeof fetch;
}

export interface CreateDatabaseOptions {
  metric?: "cosine" | "euclidean" | "l2" | "dot";
  indexType?: "HNSW" | "FLAT";
  description?: string;
  indexParameters?: { m?: number; efConstruction?: number; efSearch?: number };
  sync?: string;
  compactionPolicy?: Record<string, number>;
}

export interface SearchOptions {
  k?: number;
  filters?: Filters;
  includeMetadata?: boolean;
  includeValues?: boolean;
  threshold?: number;
  ef?: number;
  exact?: boolean;
}

export interface ScrollOptions {
  filters?: Filters;
  batchSize?: number;
  includeValues?: boolean;
  includeMetadata?: boolean;
}

/** Every error the server answers: its code ("NOT_FOUND", ...), message, HTTP status and batch index. */
export class JvdbError extends Error {
  constructor(code: string, message: string, status?: number, index?: number);
  code: string;
  /** The server's message as sent (Error.message also has the status and code). */
  serverMessage: string;
  status?: number;
  index?: number;
}
/** The server has no such route (an older server). */
export class UnsupportedError extends JvdbError {}

export class Client {
  constructor(url?: string, options?: ClientOptions);
  readonly url: string;
  request<T = any>(method: string, path: string, body?: unknown, query?: Record<string, unknown>): Promise<T>;
  health(): Promise<{ status: string; version: string }>;
  status(): Promise<Record<string, any>>;
  /** true once the server is ready (GET /readyz 200), false while it answers 503. */
  ready(): Promise<boolean>;

  createDatabase(name: string, dimension: number, options?: CreateDatabaseOptions): Promise<Record<string, any>>;
  getDatabase(name: string): Promise<Record<string, any>>;
  listDatabases(): Promise<Record<string, any>[]>;
  updateDatabase(name: string, fields: Record<string, unknown>): Promise<Record<string, any>>;
  dropDatabase(name: string): Promise<{ databaseId: string; deleted: boolean }>;
  stats(db: string): Promise<Record<string, any>>;

  upsert(db: string, items: Iterable<VectorLike> | AsyncIterable<VectorLike>, options?: { batchSize?: number }): Promise<number>;
  get(db: string, id: string): Promise<Vector | null>;
  getMany(db: string, ids: Iterable<string>): Promise<Vector[]>;
  delete(db: string, what: { ids: Iterable<string> } | { filters: Filters }): Promise<number>;
  count(db: string, options?: { filters?: Filters }): Promise<number>;
  scroll(db: string, options?: ScrollOptions): AsyncGenerator<Vector, void, undefined>;
  search(db: string, vector: ArrayLike<number>, options?: SearchOptions): Promise<SearchHit[]>;

  compact(db: string, options?: { force?: boolean; full?: boolean }): Promise<Record<string, any>>;
  backup(db: string, options?: { type?: "full" | "incremental" | "differential"; description?: string; compressionLevel?: number }): Promise<Record<string, any>>;
  listBackups(db: string): Promise<Record<string, any>[]>;
  getBackup(id: string): Promise<Record<string, any>>;
  verifyBackup(id: string): Promise<{ backupId: string; valid: boolean; [k: string]: unknown }>;
  restore(id: string, options?: { target?: string; force?: boolean }): Promise<Record<string, any>>;
  deleteBackup(id: string, options?: { cascade?: boolean }): Promise<{ count: number; deleted: string[] }>;

  jobs(): Promise<Job[]>;
  getJob(id: string): Promise<Job>;
  cancelJob(id: string): Promise<Job>;
  waitJob(id: string, options?: { timeout?: number; poll?: number }): Promise<Job>;
}

export interface Job {
  jobId: string;
  kind: string;
  database?: string;
  status: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  progress?: number;
  result?: unknown;
  error?: unknown;
  [k: string]: unknown;
}
