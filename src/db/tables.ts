/**
 * Row types of every table, in one place (kysely's `Database` interface).
 * `Generated<T>` marks columns the database fills when an insert leaves them out.
 */
import type { ColumnType, Generated } from "kysely";

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json<T = Record<string, unknown>> = ColumnType<T, string | T | undefined, string | T>;

/** A contact's deliverability statuses (API.md): zod, Pothos and the rows derive from this list. */
export const CONTACT_STATUSES = ["subscribed", "unsubscribed", "bounced", "complained"] as const;
/** A contact's deliverability status: only `subscribed` contacts are mailed. */
export type ContactStatus = typeof CONTACT_STATUSES[number];
/** A send's lifecycle statuses (API.md), in lifecycle order: zod, Pothos and the rows derive from this list. */
export const SEND_STATUSES = [
  "scheduled",
  "queued",
  "sending",
  "sent",
  "delivered",
  "bounced",
  "failed",
  "cancelled",
  "suppressed",
] as const;
/** A send's lifecycle status (API.md). */
export type SendStatus = typeof SEND_STATUSES[number];
/**
 * An email event's types (API.md); the GraphQL enum derives from this list. `resubscribed`
 * is a contact-level event (no send): a suppression lifted through the API.
 */
export const EVENT_TYPES = [
  "queued",
  "sent",
  "delivered",
  "opened",
  "clicked",
  "bounced",
  "complained",
  "unsubscribed",
  "failed",
  "cancelled",
  "suppressed",
  "resubscribed",
] as const;
/** An email event's type (API.md). */
export type EventType = typeof EVENT_TYPES[number];

export interface AccountsTable {
  id: Generated<string>;
  name: string;
  monthly_limit: number | null;
  sending_enabled: Generated<boolean>;
  paused_reason: string | null;
  /** Who paused sending: `ops` or `reputation`. */
  paused_by: string | null;
  /** Rates are counted from here when ops resumed within the window. */
  reputation_since: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface ApiKeysTable {
  id: Generated<string>;
  account_id: string;
  mode: "live" | "test";
  prefix: string;
  key_hash: string;
  created_at: Generated<Date>;
  revoked_at: NullableTimestamp;
  /** What the key may call: `full` (everything of its account) or `sending` (sends, batches, their reads). */
  scope: Generated<KeyScope>;
  /** The domains (and their subdomains) the key may send from; null: every verified domain of the account. */
  domains: string[] | null;
}

/** API key scopes (API.md): zod, Pothos and the rows derive from this list. */
export const KEY_SCOPES = ["full", "sending"] as const;
/** An API key's scope. */
export type KeyScope = typeof KEY_SCOPES[number];

export interface DomainsTable {
  id: Generated<string>;
  account_id: string;
  name: string;
  status: Generated<"pending" | "verified">;
  verification_token: string;
  created_at: Generated<Date>;
  verified_at: NullableTimestamp;
  dkim_selector: string | null;
  dkim_public_key: string | null;
  /** Encrypted with PP_SECRET (src/crypto.ts). */
  dkim_private_key_enc: string | null;
  /** `dns` (proven by verifyDomain: one account only) or `ops` (markDomainVerified). */
  verified_via: string | null;
}

export interface IdempotencyKeysTable {
  api_key_id: string;
  key: string;
  fingerprint: string;
  state: "running" | "done";
  response_status: number | null;
  response_body: Json<unknown> | null;
  created_at: Generated<Date>;
}

export interface TemplatesTable {
  id: Generated<string>;
  account_id: string;
  name: string;
  subject: string;
  html: string | null;
  text: string | null;
  from_email: string | null;
  from_name: string | null;
  reply_to: string | null;
  track_opens: Generated<boolean>;
  track_clicks: Generated<boolean>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
  /** Set by a delete: the template is gone for everything but the sends accepted before. */
  deleted_at: NullableTimestamp;
}

export interface ContactsTable {
  id: Generated<string>;
  account_id: string;
  email: string;
  first_name: string | null;
  last_name: string | null;
  company: string | null;
  fields: Json;
  status: ColumnType<ContactStatus, ContactStatus | undefined, ContactStatus>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface SendsTable {
  id: string;
  account_id: string;
  contact_id: string;
  /** Null for a submitted message (SMTP): then `content` holds its parts. */
  template_id: string | null;
  batch_id: string | null;
  to_email: string;
  subject: string;
  rendered_subject: string | null;
  from_email: string;
  from_name: string | null;
  reply_to: string | null;
  personalizations: Json;
  tags: Json<Record<string, string>>;
  track_opens: boolean;
  track_clicks: boolean;
  sandbox: Generated<boolean>;
  status: SendStatus;
  message_id: string;
  missing_variables: string[] | null;
  error_code: string | null;
  error_message: string | null;
  scheduled_at: NullableTimestamp;
  /** Scheduled beyond the horizon: no delivery job yet (promote_scheduled adds it in time). */
  job_deferred: Generated<boolean>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
  sent_at: NullableTimestamp;
  delivered_at: NullableTimestamp;
  opened_at: NullableTimestamp;
  clicked_at: NullableTimestamp;
  bounced_at: NullableTimestamp;
  links: string[] | null;
  /** The send's own headers (sends/inputs.ts CustomHeaders), written after ours; null: none. */
  headers: ColumnType<Record<string, string> | null, string | null | undefined, string | null>;
  /** The send's files in order (their content in attachment_blobs by sha256); null: none. */
  attachments: ColumnType<AttachmentMeta[] | null, string | null | undefined, string | null>;
  /** Also sent to, written as `Cc:`; null: none. */
  cc: string[] | null;
  /** Also sent to, never written into the message; null: none. */
  bcc: string[] | null;
  /** A submitted message's own parts and address headers (no template); null: a template send. */
  content: ColumnType<SubmittedContent | null, string | null | undefined, string | null>;
}

/**
 * What a message submitted over SMTP keeps of itself: its bodies as written, and its `To` and
 * `Cc` header values as written (the envelope decides who gets it; these are what readers see).
 */
export interface SubmittedContent {
  html: string | null;
  text: string | null;
  to: string | null;
  cc: string | null;
}

/** One file of a send, as the send row lists it. `sha256` is hex; the bytes are in attachment_blobs. */
export interface AttachmentMeta {
  filename: string;
  contentType: string;
  /** Inline (`cid:`) when set, without angle brackets. */
  contentId: string | null;
  size: number;
  sha256: string;
}

/** A file's bytes, once per account and content. */
export interface AttachmentBlobsTable {
  account_id: string;
  sha256: Uint8Array;
  size: number;
  content: Uint8Array;
  used_at: Generated<Date>;
}

/** Which sends refer to which blobs (retention keeps a blob while one does). */
export interface SendAttachmentsTable {
  send_id: string;
  position: number;
  account_id: string;
  sha256: Uint8Array;
}

export interface EmailEventsTable {
  id: Generated<string>;
  /** Null for contact events without a send (a suppression lifted by ops). */
  send_id: string | null;
  contact_id: string | null;
  account_id: string;
  type: EventType;
  occurred_at: Generated<Date>;
  data: Json;
}

export interface AccountUsageTable {
  account_id: string;
  month: ColumnType<Date, string, string>;
  used: number;
}

/** A saved contact filter: rules ANDed (src/segments/repo.ts). */
export interface SegmentsTable {
  id: Generated<string>;
  account_id: string;
  name: string;
  rules: Json<SegmentRule[]>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

/** One segment rule as stored. */
export interface SegmentRule {
  field: string;
  op: "EQ" | "NEQ" | "CONTAINS" | "EXISTS";
  value?: string | null;
}

/** The status of a batch (recipients or segment). */
export type BatchStatus = "expanding" | "accepted" | "failed" | "cancelled";

export interface BatchesTable {
  id: string;
  account_id: string;
  /** Null for the batch of a message submitted to several recipients over SMTP. */
  template_id: string | null;
  segment_id: string | null;
  status: BatchStatus;
  count: Generated<number>;
  request: Json;
  expand_cursor: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

/** A graphile-worker pool of a live worker process (jobs/heartbeat.ts). */
export interface WorkerHeartbeatsTable {
  pool_id: string;
  started_at: Generated<Date>;
  seen_at: Generated<Date>;
}

/** Where an account's events are POSTed (webhooks/). `event_types` without `email.`; empty: all. */
export interface WebhookEndpointsTable {
  id: Generated<string>;
  account_id: string;
  url: string;
  description: string | null;
  event_types: ColumnType<EventType[], EventType[] | undefined, EventType[]>;
  enabled: Generated<boolean>;
  disabled_reason: string | null;
  secret_enc: string;
  previous_secret_enc: string | null;
  rotated_at: NullableTimestamp;
  failing_since: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

/** The statuses of a webhook delivery. */
export const WEBHOOK_DELIVERY_STATUSES = ["pending", "succeeded", "failed"] as const;
export type WebhookDeliveryStatus = typeof WEBHOOK_DELIVERY_STATUSES[number];

/** One event (or test) for one endpoint; queued by the email_events trigger (migration 0010). */
export interface WebhookDeliveriesTable {
  id: Generated<string>;
  endpoint_id: string;
  account_id: string;
  event_id: string | null;
  event_type: string;
  payload: Json;
  status: ColumnType<WebhookDeliveryStatus, WebhookDeliveryStatus | undefined, WebhookDeliveryStatus>;
  attempts: Generated<number>;
  response_status: number | null;
  last_attempt_at: NullableTimestamp;
  next_attempt_at: NullableTimestamp;
  created_at: Generated<Date>;
}

/** A pending delivery, due at `run_at` (migration 0023); claimed until `lease_until`. */
export interface WebhookQueueTable {
  delivery_id: string;
  run_at: Generated<Date>;
  lease_until: NullableTimestamp;
}

/** One POST of a delivery, kept (≤ 1 KB of the answer). */
export interface WebhookAttemptsTable {
  id: Generated<string>;
  delivery_id: string;
  attempted_at: Generated<Date>;
  response_status: number | null;
  response_body: string | null;
  error: string | null;
  duration_ms: number;
}

/** Every table the app reads or writes. */
export interface Database {
  accounts: AccountsTable;
  api_keys: ApiKeysTable;
  domains: DomainsTable;
  templates: TemplatesTable;
  contacts: ContactsTable;
  sends: SendsTable;
  email_events: EmailEventsTable;
  account_usage: AccountUsageTable;
  segments: SegmentsTable;
  batches: BatchesTable;
  idempotency_keys: IdempotencyKeysTable;
  worker_heartbeats: WorkerHeartbeatsTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
  webhook_queue: WebhookQueueTable;
  attachment_blobs: AttachmentBlobsTable;
  send_attachments: SendAttachmentsTable;
}
