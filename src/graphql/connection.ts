/** Relay-style connections (edges, pageInfo, nodes) over keyset-paginated lists. */
import type { ObjectRef } from "@pothos/core";
import { builder, type Types } from "./builder.ts";

/** A page of rows as a connection. */
export interface Connection<T> {
  edges: { cursor: string; node: T }[];
  nodes: T[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

const PageInfo = builder.objectRef<Connection<unknown>["pageInfo"]>("PageInfo").implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean("hasNextPage"),
    endCursor: t.exposeString("endCursor", { nullable: true }),
  }),
});

/** Declares `<Name>Edge` and `<Name>Connection` for a node type. */
export function connectionType<T>(name: string, node: ObjectRef<Types, T>) {
  const Edge = builder.objectRef<{ cursor: string; node: T }>(`${name}Edge`).implement({
    fields: (t) => ({
      cursor: t.exposeString("cursor"),
      // Pothos cannot relate a generic T to its resolver result type; the ref guarantees it.
      node: t.field({ type: node, resolve: (e) => e.node as never }),
    }),
  });
  return builder.objectRef<Connection<T>>(`${name}Connection`).implement({
    fields: (t) => ({
      edges: t.field({ type: [Edge], resolve: (c) => c.edges }),
      nodes: t.field({ type: [node], resolve: (c) => c.nodes }),
      pageInfo: t.field({ type: PageInfo, resolve: (c) => c.pageInfo }),
    }),
  });
}

/** Builds a connection from a page and whether more rows follow. */
export function toConnection<T>(rows: T[], hasMore: boolean, cursorOf: (row: T) => string): Connection<T> {
  const edges = rows.map((node) => ({ cursor: cursorOf(node), node }));
  return { edges, nodes: rows, pageInfo: { hasNextPage: hasMore, endCursor: edges.at(-1)?.cursor ?? null } };
}
