//! Filler sessions in bulk: one template session made through the app, then
//! copied under new keys by the store server itself, without HTTP and
//! without the session crates.
//!
//! Redis: `DUMP` of the template key, then `RESTORE` of the payload under
//! each new key with the template's time to live, in pipelines. PostgreSQL:
//! `INSERT … SELECT` of the template's rows under keys made from
//! `generate_series`, the column list read from the catalogue, so that a
//! column the schema gains is copied as well.

use std::time::Instant;

use tower_sessions_sqlx_store::sqlx::{self, PgPool};

use crate::BoxError;
use crate::fleet::{Krate, Namespace};
use crate::servers::RedisServer;

/// `RESTORE`s sent in one pipeline.
const PIPELINE: u64 = 1_000;
/// Template copies inserted by one PostgreSQL statement.
const PG_CHUNK: u64 = 50_000;

/// The 22-character base64url key of filler session `i` of `salt`: both
/// crates' key format (16 bytes, unpadded).
pub(crate) fn filler_key(salt: u64, i: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i;
    let mut bytes = [0_u8; 16];
    for half in bytes.chunks_mut(8) {
        // splitmix64: distinct inputs give distinct, random-looking outputs.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    let mut bits: u32 = 0;
    let mut held = 0;
    let mut key = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            key.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        key.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    key
}

/// The one key of a namespace's Redis database: the template session.
pub(crate) async fn redis_template(
    redis: &RedisServer,
    namespace: &Namespace,
) -> Result<String, BoxError> {
    let mut conn = redis.connection(namespace.redis_db).await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await?;
    match keys.as_slice() {
        [key] => Ok(key.clone()),
        _ => Err(format!(
            "{namespace}: expected one template key, found {}",
            keys.len()
        )
        .into()),
    }
}

/// Copies the template session `template` under `count` new keys.
pub(crate) async fn redis_copies(
    redis: &RedisServer,
    namespace: &Namespace,
    template: &str,
    salt: u64,
    count: u64,
) -> Result<(), BoxError> {
    let began = Instant::now();
    let mut conn = redis.connection(namespace.redis_db).await?;
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg(template)
        .query_async(&mut conn)
        .await?;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(template)
        .query_async(&mut conn)
        .await?;
    if ttl <= 0 {
        return Err(format!("{namespace}: the template has no time to live ({ttl})").into());
    }
    // This crate's key: the prefix, then the session key in braces (a hash
    // tag); the peer's key is the session id alone.
    let prefix = match namespace.krate {
        Krate::Ours => template
            .rfind('{')
            .map(|brace| &template[..brace])
            .ok_or("this crate's key has no hash tag")?,
        Krate::Peer => "",
    };
    let mut next = 0;
    while next < count {
        let end = (next + PIPELINE).min(count);
        let mut pipe = redis::pipe();
        for i in next..end {
            let key = filler_key(salt, i);
            let key = match namespace.krate {
                Krate::Ours => format!("{prefix}{{{key}}}"),
                Krate::Peer => key,
            };
            pipe.cmd("RESTORE").arg(key).arg(ttl).arg(&payload).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        next = end;
    }
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    eprintln!(
        "   {namespace}: {count} copies in {:.1} s ({keys} keys)",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The key of the one session in a namespace's tables: the template.
pub(crate) async fn pg_template(pool: &PgPool, namespace: &Namespace) -> Result<String, BoxError> {
    let (table, key) = namespace.tables().swap_remove(0);
    let keys: Vec<String> = sqlx::query_scalar(&format!("SELECT {key} FROM {table}"))
        .fetch_all(pool)
        .await?;
    match keys.as_slice() {
        [key] => Ok(key.clone()),
        _ => Err(format!(
            "{namespace}: expected one template row, found {}",
            keys.len()
        )
        .into()),
    }
}

/// Copies the template's rows in every table of the namespace under
/// `count` new keys; `overrides` replaces columns of the first table (the
/// sessions) by SQL expressions.
pub(crate) async fn pg_copies(
    pool: &PgPool,
    namespace: &Namespace,
    template: &str,
    salt: u64,
    count: u64,
    overrides: &[(&str, &str)],
) -> Result<(), BoxError> {
    let began = Instant::now();
    let tables = namespace.tables();
    let mut statements = Vec::new();
    for (index, (table, key)) in tables.iter().enumerate() {
        let columns = columns(pool, table).await?;
        let mut list = Vec::new();
        for column in &columns {
            let expression = if column == key {
                // Base64url of the first 16 bytes of a hash: 22 characters.
                format!(
                    "left(translate(encode(sha256(convert_to('{salt}:' || g, 'UTF8')), \
                     'base64'), '+/', '-_'), 22)"
                )
            } else if let Some((_, e)) = overrides.iter().find(|(c, _)| *c == column && index == 0)
            {
                (*e).to_owned()
            } else {
                format!("s.\"{column}\"")
            };
            list.push(expression);
        }
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        statements.push(format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {table} s, generate_series($1::bigint, $2::bigint) g \
             WHERE s.{key} = $3",
            quoted.join(", "),
            list.join(", ")
        ));
    }
    // Bulk loading: the copies reference keys inserted by the same chunk,
    // so the foreign key triggers are skipped where the role allows it
    // (a superuser's); they only make the load slower.
    let mut conn = pool.acquire().await?;
    let skipped = sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .is_ok();
    let mut next = 0;
    while next < count {
        let end = (next + PG_CHUNK).min(count);
        for statement in &statements {
            sqlx::query(statement)
                .bind(i64::try_from(next)?)
                .bind(i64::try_from(end)? - 1)
                .bind(template)
                .execute(&mut *conn)
                .await?;
        }
        next = end;
    }
    if skipped {
        sqlx::raw_sql("RESET session_replication_role")
            .execute(&mut *conn)
            .await?;
    }
    drop(conn);
    let mut sizes = Vec::new();
    for (table, _) in &tables {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await?;
        sizes.push(format!("{table}: {rows} rows"));
    }
    eprintln!(
        "   {namespace}: {count} copies in {:.1} s ({})",
        began.elapsed().as_secs_f64(),
        sizes.join(", ")
    );
    Ok(())
}

/// The columns of `table` (`schema.name`), in order.
async fn columns(pool: &PgPool, table: &str) -> Result<Vec<String>, BoxError> {
    let (schema, name) = table.split_once('.').ok_or("a table is schema.name")?;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER' \
         ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(pool)
    .await?;
    if columns.is_empty() {
        return Err(format!("{table} has no columns").into());
    }
    Ok(columns)
}
