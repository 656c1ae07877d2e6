/** Domain input shapes. */
import { z } from "zod";

/** A DNS hostname with at least two labels, stored lower-case. */
export const DomainName = z.string().trim().toLowerCase().max(253)
  .regex(
    /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$/,
    "must be a domain name like mail.example.com",
  );

/** addDomain's arguments. */
export const AddDomainInput = z.strictObject({ name: DomainName });
