/**
 * The dev seed: on the first start against an empty database (embedded default, or
 * PP_SEED=true) it creates an account with the verified domain example.com, a
 * `pp_test_` key and a sample order-shipped template, so the README's curl works at once.
 */
import type { Deps } from "./context.ts";
import * as accounts from "./accounts/repo.ts";
import { issueKey } from "./accounts/service.ts";
import { encryptSecret } from "./crypto.ts";
import { generateDkimKeys } from "./mail/dkim.ts";
import { insertTemplate } from "./templates/repo.ts";
import { insertVerifiedDomain } from "./domains/repo.ts";

/** What the seed made; the key is shown once. */
export interface SeedResult {
  accountId: string;
  apiKey: string;
  templateId: string;
}

const HTML = `<p>Hi {{ first_name or "there" }},</p>
<p>Good news: your order <strong>{{ order_id }}</strong> is on its way.</p>
<p><a href="{{ tracking_url }}">Track your parcel</a></p>
<p>— The Example Shop</p>`;

const TEXT = `Hi {{ first_name or "there" }},

Good news: your order {{ order_id }} is on its way.
Track your parcel: {{ tracking_url }}

— The Example Shop`;

/** Seeds the dev data when the database has no account; null when it already had one. */
export async function seedIfEmpty(deps: Deps): Promise<SeedResult | null> {
  return await deps.db.transaction().execute(async (trx) => {
    await accounts.lockSeed(trx);
    if (await accounts.anyAccount(trx)) return null;
    const account = await accounts.insertAccount(trx, "Dev account", null);
    // Verified by fiat, with a DKIM key like any domain (mail from it is signed).
    const keys = await generateDkimKeys();
    await insertVerifiedDomain(trx, {
      account_id: account.id,
      name: "example.com",
      verified_via: "ops",
      verification_token: "seeded",
      dkim_selector: "ppdev",
      dkim_public_key: keys.publicKeyB64,
      dkim_private_key_enc: encryptSecret(deps.secrets.secret, keys.privateKeyPem),
    });
    const template = await insertTemplate(trx, {
      account_id: account.id,
      name: "Order shipped",
      subject: "Your order {{ order_id }} has shipped",
      html: HTML,
      text: TEXT,
      from_email: "orders@example.com",
      from_name: "Example Shop",
      updated_at: new Date(),
    });
    const { key } = await issueKey({ ...deps, db: trx }, account.id, "test");
    deps.log.info("dev data seeded", { accountId: account.id, templateId: template.id });
    return { accountId: account.id, apiKey: key, templateId: template.id };
  });
}
