//! The demo catalogue: without `EXPORTAL_DATASETS`, the first start creates a SQLite database
//! of 1,000,000 orders in the data directory, so that a fresh install has something real to
//! export. The data is generated inside SQLite (a recursive CTE), which takes seconds, and
//! deliberately contains what breaks naive exporters: NULLs, Unicode, commas, quotes, newlines
//! and formula-like text.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::Executor;
use std::path::Path;

const SCHEMA_AND_DATA: &str = r#"
CREATE TABLE demo_names (k INTEGER PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO demo_names (k, name) VALUES
  (0, 'Zoë Müller'), (1, 'Li Wei 李伟'), (2, 'Seán O''Brien, Jr.'), (3, 'Ana "Nina" Souza'),
  (4, 'Émile Zola'), (5, '=HYPERLINK("http://example.com")'), (6, 'Ngozi Okafor'),
  (7, 'Søren Kierkegaard'), (8, 'José Álvarez'), (9, 'Anna' || char(10) || 'Second line'),
  (10, '@handle'), (11, 'Plain Name');

CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT,
  country TEXT,
  created_at DATETIME NOT NULL
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO customers (id, name, email, country, created_at)
SELECT i,
       (SELECT name FROM demo_names WHERE k = i % 12) || ' #' || i,
       CASE WHEN i % 17 = 0 THEN NULL ELSE 'customer' || i || '@example.com' END,
       CASE i % 6 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'JP' WHEN 3 THEN 'BR' WHEN 4 THEN 'NG' ELSE NULL END,
       datetime(1672531200 + (i * 2609) % 31536000, 'unixepoch')
FROM n;

CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL,
  customer TEXT NOT NULL,
  status TEXT NOT NULL,
  total NUMERIC NOT NULL,
  currency TEXT NOT NULL,
  paid BOOLEAN NOT NULL,
  created_at DATETIME NOT NULL,
  shipped_on DATE,
  note TEXT
);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ORDERS})
INSERT INTO orders (id, customer_id, customer, status, total, currency, paid, created_at, shipped_on, note)
SELECT i,
       c,
       (SELECT name FROM demo_names WHERE k = c % 12) || ' #' || c,
       CASE i % 5 WHEN 0 THEN 'pending' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' WHEN 3 THEN 'cancelled' ELSE 'refunded' END,
       ROUND(((i * 2654435761) % 100000) / 100.0 + 0.01, 2),
       CASE i % 3 WHEN 0 THEN 'EUR' WHEN 1 THEN 'USD' ELSE 'JPY' END,
       i % 5 IN (1, 2),
       datetime(1704067200 + (i * 63) % 63072000, 'unixepoch'),
       CASE WHEN i % 5 = 2 THEN date(1704067200 + (i * 63) % 63072000 + 86400 * (1 + i % 9), 'unixepoch') ELSE NULL END,
       CASE i % 10
         WHEN 0 THEN 'Gift, please wrap it "nicely"' || char(10) || 'Thanks!'
         WHEN 3 THEN '-5% loyalty discount'
         WHEN 7 THEN 'Livraison prévue à 10h — merci'
         ELSE NULL END
FROM (SELECT i, (i * 7919) % 10000 + 1 AS c FROM n);
CREATE INDEX orders_created_at ON orders (created_at);
CREATE INDEX orders_status ON orders (status);
DROP TABLE demo_names;
"#;

/// The datasets file of the demo, over the database at `db`.
pub fn catalog_toml(db: &Path, orders: u64) -> String {
    format!(
        r#"
[sources.demo]
url = "sqlite://{db}"

[[datasets]]
id = "orders"
title = "Orders"
description = "One row per order, with its customer, amount and status ({orders} orders, 2024–2025)."
source = "demo"
sql = """
SELECT id, customer, status, total, currency, paid, created_at, shipped_on, note
FROM orders
WHERE (:from IS NULL OR created_at >= :from)
  AND (:to IS NULL OR created_at < :to)
  AND (:status IS NULL OR status = :status)
  AND (:min_total IS NULL OR total >= :min_total)
ORDER BY id
"""

[[datasets.params]]
name = "from"
label = "Created from"
type = "date"

[[datasets.params]]
name = "to"
label = "Created before"
type = "date"

[[datasets.params]]
name = "status"
label = "Status"
type = "enum"
values = ["pending", "paid", "shipped", "cancelled", "refunded"]

[[datasets.params]]
name = "min_total"
label = "Minimum total"
type = "number"

[[datasets]]
id = "customers"
title = "Customers"
description = "Everyone who ever ordered: name, e-mail and country."
source = "demo"
sql = "SELECT id, name, email, country, created_at FROM customers WHERE (:country IS NULL OR country = :country) ORDER BY id"

[datasets.labels]
id = "Customer #"
name = "Name"
email = "E-mail"
country = "Country"
created_at = "Customer since"

[[datasets.params]]
name = "country"
label = "Country"
type = "enum"
values = ["BR", "DE", "FR", "JP", "NG"]
"#,
        db = db.display(),
        orders = app::text::group_digits(orders),
    )
}

/// Creates the demo database with `orders` rows unless it already exists. Built under a
/// temporary name and renamed, so an interrupted first start never leaves half a database.
pub async fn ensure_database(db: &Path, orders: u64) -> anyhow::Result<()> {
    if db.exists() {
        return Ok(());
    }
    let tmp = db.with_extension("db.partial");
    let _ = std::fs::remove_file(&tmp);
    let started = std::time::Instant::now();
    {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&tmp)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Off)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Off),
            )
            .await?;
        let sql = SCHEMA_AND_DATA.replace("{ORDERS}", &orders.to_string());
        let mut conn = pool.acquire().await?;
        conn.execute("BEGIN").await?;
        conn.execute(sql.as_str()).await?;
        conn.execute("COMMIT").await?;
        drop(conn);
        pool.close().await;
    }
    std::fs::rename(&tmp, db)?;
    tracing::info!(
        orders,
        secs = format!("{:.1}", started.elapsed().as_secs_f64()),
        path = %db.display(),
        "created the demo database"
    );
    Ok(())
}
