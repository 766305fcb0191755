//! Commit and summary signatures: OpenPGP (`ostree.gpgsigs`) and ed25519
//! (`ostree.sign.ed25519`), checked the way ostree checks them.
//!
//! A signed object's signatures live apart from it, in an `a{sv}` (the
//! commit's detached metadata `.commitmeta`, or `summary.sig` for the
//! summary), under a key whose value is an `aay`: one signature per element,
//! each over the exact bytes of the object.
//!
//! Every signature found is judged on its own and lands in a [`Verdict`],
//! either as a [`Signer`] (good) or as a human-readable reason (bad).
//! Nothing in here panics on hostile input: a malformed blob is one more
//! bad entry. The caller decides the policy (ostree's is "at least one good
//! signature"; see [`Verdict::require_good`]). One difference from ostree:
//! ostree hands all OpenPGP signatures to gpgme in one buffer, so a single
//! malformed blob makes it reject every signature; here each blob is judged
//! alone, so a good signature still counts next to a malformed one.
//!
//! OpenPGP keys are judged as GnuPG (through gpgme, as ostree uses it)
//! judges them, within what the key material itself says (no trust
//! database, no key servers):
//! - the signing key is the primary key or a subkey; a subkey must be bound
//!   to the primary by a valid binding signature that gives it the signing
//!   capability and carries a valid back-signature (cross-certification);
//!   its signatures are attributed to the primary key;
//! - a primary key must carry at least one valid self-signature; if its
//!   newest self-signature has key flags, they must allow signing;
//! - a key (primary or subkey) revoked by a valid self-made revocation
//!   signature, or past its expiry time at the time of checking, makes its
//!   signatures bad, whatever their date (ostree treats gpgme's
//!   `KEY_REVOKED` / `KEY_EXPIRED` as not valid); so does a signature past
//!   its own expiry time, or one dated before its key was made;
//! - only binary-mode data signatures are accepted (ostree makes no other
//!   kind; a text-mode one would also cover the data with its line ends
//!   changed), and not over MD5 (GnuPG refuses those too);
//! - revocations issued by designated third-party revokers are not
//!   considered (they are not self-verifiable without the revoker's key).

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use gvariant::{Marker, Structure, gv};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{self, Packet, PacketParser, Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag};

/// The detached-metadata key holding OpenPGP signatures (`aay`).
pub const GPG_KEY: &str = "ostree.gpgsigs";
/// The detached-metadata key holding ed25519 signatures (`aay`).
pub const ED25519_KEY: &str = "ostree.sign.ed25519";

/// Which kind of signature a [`Signer`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigKind {
    Gpg,
    Ed25519,
}

/// Who made a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub kind: SigKind,
    /// OpenPGP: the primary key's fingerprint, upper-case hex (also when a
    /// subkey made the signature). ed25519: the public key, base64.
    pub key: String,
    /// OpenPGP: the primary user id of the key.
    pub user_id: Option<String>,
    /// OpenPGP: the fingerprint (upper-case hex) of the subkey that made the
    /// signature, when it was not the primary key.
    pub subkey: Option<String>,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SigKind::Gpg => write!(f, "OpenPGP key {}", self.key)?,
            SigKind::Ed25519 => write!(f, "ed25519 key {}", self.key)?,
        }
        if let Some(uid) = &self.user_id {
            write!(f, " \"{uid}\"")?;
        }
        if let Some(sub) = &self.subkey {
            write!(f, " (subkey {sub})")?;
        }
        Ok(())
    }
}

/// The outcome of checking every signature of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Signatures that verify with a trusted, usable key.
    pub good: Vec<Signer>,
    /// Why each other signature was rejected.
    pub bad: Vec<String>,
}

impl Verdict {
    /// Is there at least one good signature?
    pub fn is_good(&self) -> bool {
        !self.good.is_empty()
    }

    /// Were no signatures found at all?
    pub fn is_unsigned(&self) -> bool {
        self.good.is_empty() && self.bad.is_empty()
    }

    /// ostree's rule: succeed when at least one signature is good; otherwise
    /// an error naming `what` and listing every rejected signature.
    pub fn require_good(&self, what: &str) -> Result<&Signer> {
        if let Some(s) = self.good.first() {
            return Ok(s);
        }
        if self.bad.is_empty() {
            bail!("{what}: no signatures found");
        }
        bail!("{what}: no valid signature ({})", self.bad.join("; "))
    }

    fn merge(&mut self, other: Verdict) {
        self.good.extend(other.good);
        self.bad.extend(other.bad);
    }
}

/// Read the `aay` under `key` in the serialised `a{sv}` `detached`.
/// `Ok(None)` when the key is absent; `Err` when it has another type.
fn signature_list(detached: &[u8], key: &str) -> Result<Option<Vec<Vec<u8>>>, String> {
    for e in &*gv!("a{sv}").from_bytes(detached) {
        let (k, v) = e.to_tuple();
        if k.to_str() == key {
            return match v.get(gv!("aay")) {
                Some(l) => Ok(Some(l.into_iter().map(|b| b.to_vec()).collect())),
                None => Err(format!("detached metadata entry {key} is not of type aay")),
            };
        }
    }
    Ok(None)
}

/// The signatures under `key`, or a verdict to return at once (unsigned, or
/// the entry is malformed).
fn signatures(detached: Option<&[u8]>, key: &str) -> Result<Vec<Vec<u8>>, Verdict> {
    let Some(detached) = detached else {
        return Err(Verdict::default());
    };
    match signature_list(detached, key) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(Verdict::default()),
        Err(reason) => Err(Verdict {
            good: vec![],
            bad: vec![reason],
        }),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn fmt_utc(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::show::utc_from_unix(secs.min(i64::MAX as u64) as i64);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

fn fpr_hex(fp: &Fingerprint) -> String {
    hex::encode_upper(fp.as_bytes())
}

// ---------------------------------------------------------------------------
// OpenPGP

/// A subkey, with what its binding says about it.
#[derive(Debug, Clone)]
struct GpgSubkey {
    key: packet::PublicSubkey,
    fingerprint: Fingerprint,
    key_id: KeyId,
    created: u64,
    /// When the binding says the subkey expires.
    expires: Option<u64>,
    /// Why the subkey may not sign at all (revoked, not bound, not a
    /// signing key, …).
    problem: Option<String>,
}

/// One certificate (transferable public key) of a [`Keyring`], with its
/// validity worked out once at load time.
#[derive(Debug, Clone)]
struct GpgCert {
    primary: packet::PublicKey,
    fingerprint: Fingerprint,
    key_id: KeyId,
    created: u64,
    user_id: Option<String>,
    expires: Option<u64>,
    /// Why the whole certificate is unusable (revoked, no self-signature).
    problem: Option<String>,
    /// Why the primary key itself may not sign (key flags without "sign").
    primary_no_sign: Option<String>,
    subkeys: Vec<GpgSubkey>,
}

/// Does `sig` name `fp`/`id` as its issuer (or name no issuer at all)?
fn issued_by(sig: &Signature, fp: &Fingerprint, id: &KeyId) -> bool {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    (fps.is_empty() && ids.is_empty()) || fps.contains(&fp) || ids.contains(&id)
}

fn sig_time(sig: &Signature) -> u64 {
    sig.created().map(|t| u64::from(t.as_secs())).unwrap_or(0)
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Key expiry from a self-signature, relative to the key's creation time.
fn expiry_from(sig: &Signature, created: u64) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d != 0)
        .map(|d| created + d)
}

fn user_id_string(id: &packet::UserId) -> String {
    match id.as_str() {
        Some(s) => s.to_string(),
        None => String::from_utf8_lossy(id.id()).into_owned(),
    }
}

impl GpgCert {
    fn new(k: &SignedPublicKey) -> GpgCert {
        let primary = &k.primary_key;
        let fingerprint = primary.fingerprint();
        let key_id = primary.legacy_key_id();
        let created = u64::from(primary.created_at().as_secs());
        let mine = |s: &Signature| issued_by(s, &fingerprint, &key_id);

        let revoked = k
            .details
            .revocation_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::KeyRevocation) && mine(s))
            .find(|s| s.verify_key(primary).is_ok());

        // Valid self-signatures: direct-key signatures and user id
        // certifications (the newest one gives expiry and key flags).
        let mut self_sigs: Vec<&Signature> = k
            .details
            .direct_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::Key) && mine(s))
            .filter(|s| s.verify_key(primary).is_ok())
            .collect();
        // (user id, primary flag, newest certification time)
        let mut uids: Vec<(String, bool, u64)> = Vec::new();
        for u in &k.details.users {
            let valid = |s: &&Signature| {
                mine(s) && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
            };
            let uid_revoked = u
                .signatures
                .iter()
                .filter(|s| s.typ() == Some(SignatureType::CertRevocation))
                .any(|s| valid(&s));
            let certs: Vec<&Signature> = u
                .signatures
                .iter()
                .filter(|s| s.is_certification() && s.typ() != Some(SignatureType::CertRevocation))
                .filter(valid)
                .collect();
            if let Some(newest) = certs.iter().max_by_key(|s| sig_time(s)) {
                self_sigs.extend(certs.iter().copied());
                if !uid_revoked {
                    uids.push((user_id_string(&u.id), newest.is_primary(), sig_time(newest)));
                }
            }
        }
        // The primary user id as GnuPG picks it: the one flagged primary
        // (the newest such), else the one with the newest self-signature.
        let user_id = uids
            .iter()
            .filter(|u| u.1)
            .max_by_key(|u| u.2)
            .or_else(|| uids.iter().max_by_key(|u| u.2))
            .map(|u| u.0.clone());

        let newest = self_sigs.iter().max_by_key(|s| sig_time(s)).copied();
        let expires = newest.and_then(|s| expiry_from(s, created));
        let primary_no_sign = newest
            .filter(|s| has_key_flags(s) && !s.key_flags().sign())
            .map(|_| "its primary key is not allowed to sign (key flags)".to_string());

        let problem = if let Some(r) = revoked {
            Some(match r.revocation_reason_string() {
                Some(why) if !why.is_empty() => {
                    format!("key is revoked ({})", String::from_utf8_lossy(why))
                }
                _ => "key is revoked".to_string(),
            })
        } else if newest.is_none() {
            Some("key has no valid self-signature".to_string())
        } else {
            None
        };

        let subkeys = k
            .public_subkeys
            .iter()
            .map(|sk| GpgSubkey::new(primary, &fingerprint, &key_id, sk))
            .collect();

        GpgCert {
            primary: primary.clone(),
            fingerprint,
            key_id,
            created,
            user_id,
            expires,
            problem,
            primary_no_sign,
            subkeys,
        }
    }

    fn describe(&self) -> String {
        match &self.user_id {
            Some(u) => format!("{} \"{u}\"", fpr_hex(&self.fingerprint)),
            None => fpr_hex(&self.fingerprint),
        }
    }
}

impl GpgSubkey {
    fn new(
        primary: &packet::PublicKey,
        pfp: &Fingerprint,
        pid: &KeyId,
        sk: &pgp::composed::SignedPublicSubKey,
    ) -> GpgSubkey {
        let key = &sk.key;
        let created = u64::from(key.created_at().as_secs());
        let mine = |s: &Signature| issued_by(s, pfp, pid);
        let bindings: Vec<&Signature> = sk
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding) && mine(s))
            .filter(|s| s.verify_subkey_binding(primary, key).is_ok())
            .collect();
        let newest = bindings.iter().max_by_key(|s| sig_time(s)).copied();
        let revoked = sk
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation) && mine(s))
            .any(|s| s.verify_subkey_binding(primary, key).is_ok());
        let problem = match newest {
            _ if revoked => Some("subkey is revoked".to_string()),
            None => Some("subkey has no valid binding signature".to_string()),
            Some(b) if !b.key_flags().sign() => {
                Some("subkey is not allowed to sign (key flags)".to_string())
            }
            Some(b) => match b.embedded_signature() {
                None => {
                    Some("signing subkey is not cross-certified (no back-signature)".to_string())
                }
                Some(back) => back
                    .verify_primary_key_binding(key, primary)
                    .err()
                    .map(|e| format!("signing subkey has an invalid back-signature: {e}")),
            },
        };
        GpgSubkey {
            key: key.clone(),
            fingerprint: key.fingerprint(),
            key_id: key.legacy_key_id(),
            created,
            expires: newest.and_then(|s| expiry_from(s, created)),
            problem,
        }
    }
}

/// Trusted OpenPGP public keys.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    certs: Vec<GpgCert>,
}

const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

impl Keyring {
    /// An empty keyring (every signature checked against it is bad).
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Load public keys from a file (ASCII-armored or binary, one or
    /// several keys, several armor blocks allowed).
    pub fn load(path: &Path) -> Result<Keyring> {
        let b = std::fs::read(path)
            .with_context(|| format!("reading OpenPGP keyring {}", path.display()))?;
        Keyring::from_bytes(&b)
            .with_context(|| format!("loading OpenPGP keyring {}", path.display()))
    }

    /// Parse public keys (ASCII-armored or binary). At least one key must be
    /// found.
    pub fn from_bytes(b: &[u8]) -> Result<Keyring> {
        let mut k = Keyring::new();
        k.add_bytes(b)?;
        Ok(k)
    }

    /// Add the keys in `b` (as for [`Keyring::from_bytes`]).
    pub fn add_bytes(&mut self, b: &[u8]) -> Result<()> {
        if b.get(8..12) == Some(b"KBXf") {
            bail!(
                "this is a GnuPG keybox (pubring.kbx), not an OpenPGP keyring; \
                 export the keys with `gpg --export`"
            );
        }
        let first = b.iter().find(|c| !c.is_ascii_whitespace());
        let keys = match first {
            None => bail!("no OpenPGP public key found (empty input)"),
            Some(c) if c & 0x80 != 0 => parse_binary(b)?,
            Some(_) => parse_armored(b)?,
        };
        if keys.is_empty() {
            bail!("no OpenPGP public key found");
        }
        self.certs.extend(keys.iter().map(GpgCert::new));
        Ok(())
    }

    /// Add every key of `other`.
    pub fn merge(&mut self, other: Keyring) {
        self.certs.extend(other.certs);
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// The primary key fingerprints (upper-case hex), in load order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs.iter().map(|c| fpr_hex(&c.fingerprint)).collect()
    }
}

fn parse_binary(b: &[u8]) -> Result<Vec<SignedPublicKey>> {
    // Keyrings in the legacy (gpg 1.x pubring.gpg) layout carry a trust
    // packet after signatures, which rPGP's key parser does not expect (it
    // would silently lose what follows, e.g. subkeys): drop them first.
    let has_trust = PacketParser::new(Cursor::new(b)).any(|p| matches!(p, Ok(Packet::Trust(_))));
    let it = if has_trust {
        let packets = PacketParser::new(Cursor::new(b))
            .filter(|p| {
                !matches!(
                    p,
                    Ok(Packet::Trust(_) | Packet::Marker(_) | Packet::Padding(_))
                )
            })
            .peekable();
        SignedPublicKey::from_packets(packets)
    } else {
        SignedPublicKey::from_bytes_many(Cursor::new(b))
            .map_err(|e| anyhow::anyhow!("parsing OpenPGP keys: {e}"))?
    };
    it.enumerate()
        .map(|(i, k)| k.map_err(|e| anyhow::anyhow!("parsing OpenPGP key #{}: {e}", i + 1)))
        .collect()
}

fn parse_armored(b: &[u8]) -> Result<Vec<SignedPublicKey>> {
    let text = std::str::from_utf8(b).context("armored OpenPGP data is not UTF-8")?;
    let starts: Vec<usize> = text.match_indices(ARMOR_BEGIN).map(|(i, _)| i).collect();
    if starts.is_empty() {
        bail!("no \"{ARMOR_BEGIN}\" found (not an OpenPGP public key)");
    }
    let mut keys = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let (it, _) = SignedPublicKey::from_armor_many(Cursor::new(&text[s..end]))
            .map_err(|e| anyhow::anyhow!("parsing armor block #{}: {e}", n + 1))?;
        for k in it {
            keys.push(k.map_err(|e| {
                anyhow::anyhow!("parsing OpenPGP key in armor block #{}: {e}", n + 1)
            })?);
        }
    }
    Ok(keys)
}

/// Check every OpenPGP signature (`ostree.gpgsigs`) in `detached` (the
/// serialised `a{sv}` of a `.commitmeta` or `summary.sig`; `None` when the
/// object has none) over `data`, with key validity judged now.
pub fn verify_gpg(data: &[u8], detached: Option<&[u8]>, keyring: &Keyring) -> Verdict {
    verify_gpg_at(data, detached, keyring, SystemTime::now())
}

/// [`verify_gpg`], with key and signature expiry judged at `now`.
pub fn verify_gpg_at(
    data: &[u8],
    detached: Option<&[u8]>,
    keyring: &Keyring,
    now: SystemTime,
) -> Verdict {
    let sigs = match signatures(detached, GPG_KEY) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let now = unix_secs(now);
    let mut verdict = Verdict::default();
    for (i, blob) in sigs.iter().enumerate() {
        verdict.merge(verify_gpg_blob(data, blob, i + 1, keyring, now));
    }
    verdict
}

/// Check the signature(s) in one element of `ostree.gpgsigs`.
fn verify_gpg_blob(data: &[u8], blob: &[u8], n: usize, keyring: &Keyring, now: u64) -> Verdict {
    let mut v = Verdict::default();
    let parsed = match DetachedSignature::from_bytes_many(Cursor::new(blob)) {
        Ok(it) => it.collect::<Vec<_>>(),
        Err(e) => vec![Err(e)],
    };
    if parsed.is_empty() {
        v.bad.push(format!(
            "signature #{n}: malformed (no OpenPGP signature packet)"
        ));
    }
    for p in parsed {
        match p {
            Err(e) => v.bad.push(format!(
                "signature #{n}: malformed OpenPGP signature packet: {e}"
            )),
            Ok(sig) => match check_one(data, &sig.signature, keyring, now) {
                Ok(s) => v.good.push(s),
                Err(why) => v.bad.push(format!("signature #{n}: {why}")),
            },
        }
    }
    v
}

/// The issuer named by `sig`, for messages.
fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        format!("0x{}", fpr_hex(fp))
    } else if let Some(id) = sig.issuer_key_id().first() {
        format!("0x{}", hex::encode_upper(id.as_ref()))
    } else {
        "(no issuer given)".to_string()
    }
}

/// Check one data signature packet: `Ok(signer)` or `Err(reason)`.
fn check_one(data: &[u8], sig: &Signature, keyring: &Keyring, now: u64) -> Result<Signer, String> {
    match sig.typ() {
        Some(SignatureType::Binary) => {}
        Some(SignatureType::Text) => {
            // ostree signs in binary mode; a text-mode signature would also
            // verify over the data with its line ends changed.
            return Err(format!(
                "text-mode signature by {} (ostree signatures are binary)",
                issuer_name(sig)
            ));
        }
        t => {
            return Err(format!(
                "not a data signature (type {t:?}) by {}",
                issuer_name(sig)
            ));
        }
    }
    if sig.hash_alg() == Some(HashAlgorithm::Md5) {
        // GnuPG rejects MD5 data signatures too.
        return Err(format!(
            "signature by {} uses the broken MD5 digest",
            issuer_name(sig)
        ));
    }
    // Candidate (cert, subkey index) pairs whose key the signature names.
    let mut candidates: Vec<(&GpgCert, Option<&GpgSubkey>)> = Vec::new();
    for c in &keyring.certs {
        if issued_by(sig, &c.fingerprint, &c.key_id) {
            candidates.push((c, None));
        }
        for sk in &c.subkeys {
            if issued_by(sig, &sk.fingerprint, &sk.key_id) {
                candidates.push((c, Some(sk)));
            }
        }
    }
    if candidates.is_empty() {
        return Err(format!("signature by unknown key {}", issuer_name(sig)));
    }
    let mut failures = Vec::new();
    for (cert, sub) in &candidates {
        let res = match sub {
            None => sig.verify(&cert.primary, data),
            Some(sk) => sig.verify(&sk.key, data),
        };
        match res {
            Ok(()) => return judge(sig, cert, *sub, now),
            Err(e) => failures.push((cert, e)),
        }
    }
    let (cert, e) = &failures[0];
    Err(format!(
        "bad signature by key {}: {}",
        cert.describe(),
        why_bad(e)
    ))
}

/// A one-line reason for a failed cryptographic check.
fn why_bad(e: &pgp::errors::Error) -> String {
    let msg = e.to_string();
    if msg.contains("invalid signed hash value") {
        // rPGP compares the digest's first two bytes first: the data (or
        // the signature) was changed.
        "the data does not match the signature".to_string()
    } else {
        msg.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A cryptographically valid signature by `cert` (through `sub`): is the key
/// usable, and the signature current?
fn judge(
    sig: &Signature,
    cert: &GpgCert,
    sub: Option<&GpgSubkey>,
    now: u64,
) -> Result<Signer, String> {
    let who = cert.describe();
    if let Some(p) = &cert.problem {
        return Err(format!("signature by key {who}, but the {p}"));
    }
    if let Some(exp) = cert.expires
        && exp <= now
    {
        return Err(format!(
            "signature by expired key {who} (expired {})",
            fmt_utc(exp)
        ));
    }
    let created = sig_time(sig);
    match sub {
        None => {
            if let Some(p) = &cert.primary_no_sign {
                return Err(format!("signature by key {who}, but {p}"));
            }
            if created < cert.created {
                return Err(format!("signature by key {who} predates the key"));
            }
        }
        Some(sk) => {
            let sfp = fpr_hex(&sk.fingerprint);
            if let Some(p) = &sk.problem {
                return Err(format!(
                    "signature by subkey {sfp} of key {who}, but the {p}"
                ));
            }
            if let Some(exp) = sk.expires
                && exp <= now
            {
                return Err(format!(
                    "signature by expired subkey {sfp} of key {who} (expired {})",
                    fmt_utc(exp)
                ));
            }
            if created < sk.created {
                return Err(format!(
                    "signature by subkey {sfp} of key {who} predates the subkey"
                ));
            }
        }
    }
    if let Some(d) = sig.signature_expiration_time()
        && d.as_secs() != 0
        && created + u64::from(d.as_secs()) <= now
    {
        return Err(format!(
            "expired signature by key {who} (expired {})",
            fmt_utc(created + u64::from(d.as_secs()))
        ));
    }
    Ok(Signer {
        kind: SigKind::Gpg,
        key: fpr_hex(&cert.fingerprint),
        user_id: cert.user_id.clone(),
        subkey: sub.map(|s| fpr_hex(&s.fingerprint)),
    })
}

// ---------------------------------------------------------------------------
// ed25519

/// Trusted ed25519 public keys.
#[derive(Debug, Clone, Default)]
pub struct Ed25519Keys {
    keys: Vec<ed25519_dalek::VerifyingKey>,
}

impl Ed25519Keys {
    /// No keys (every signature checked against it is bad).
    pub fn new() -> Ed25519Keys {
        Ed25519Keys::default()
    }

    /// One public key: base64 of its 32 bytes (ostree's format).
    pub fn from_base64(key: &str) -> Result<Ed25519Keys> {
        Ok(Ed25519Keys {
            keys: vec![parse_ed25519_public(key)?],
        })
    }

    /// A keys file as ostree's `--keys-file`: one base64 public key a line;
    /// blank lines and lines starting with `#` are ignored. Any other line
    /// that is not a valid key is an error naming the file and line.
    pub fn load_file(path: &Path) -> Result<Ed25519Keys> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading ed25519 keys file {}", path.display()))?;
        let keys = Ed25519Keys::parse_list(&text)
            .with_context(|| format!("in ed25519 keys file {}", path.display()))?;
        if keys.is_empty() {
            bail!("ed25519 keys file {} holds no keys", path.display());
        }
        Ok(keys)
    }

    /// Parse the contents of a keys file (see [`Ed25519Keys::load_file`]);
    /// may be empty.
    pub fn parse_list(text: &str) -> Result<Ed25519Keys> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(parse_ed25519_public(line).with_context(|| format!("line {}", i + 1))?);
        }
        Ok(Ed25519Keys { keys })
    }

    /// Add the keys of `other` (duplicates are dropped).
    pub fn merge(&mut self, other: Ed25519Keys) {
        for k in other.keys {
            if !self.keys.contains(&k) {
                self.keys.push(k);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys, base64.
    pub fn to_base64(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| BASE64_STANDARD.encode(k.as_bytes()))
            .collect()
    }
}

fn parse_ed25519_public(s: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let s = s.trim();
    let b = BASE64_STANDARD
        .decode(s)
        .map_err(|e| anyhow::anyhow!("ed25519 public key {s:?} is not valid base64: {e}"))?;
    let arr: [u8; 32] = match b.len() {
        32 => b.try_into().expect("length checked"),
        64 => bail!(
            "ed25519 public key {s:?} decodes to 64 bytes: that is a secret key (seed and public \
             key), not a public key"
        ),
        n => bail!("ed25519 public key {s:?} decodes to {n} bytes, expected 32"),
    };
    let k = ed25519_dalek::VerifyingKey::from_bytes(&arr)
        .map_err(|_| anyhow::anyhow!("ed25519 public key {s:?} is not a valid curve point"))?;
    if k.is_weak() {
        bail!("ed25519 public key {s:?} is a weak (small-order) key");
    }
    Ok(k)
}

/// Check every ed25519 signature (`ostree.sign.ed25519`) in `detached` over
/// `data`. A signature is good when any trusted key verifies it (strict
/// verification, as libsodium does).
pub fn verify_ed25519(data: &[u8], detached: Option<&[u8]>, keys: &Ed25519Keys) -> Verdict {
    let sigs = match signatures(detached, ED25519_KEY) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let mut v = Verdict::default();
    for (i, blob) in sigs.iter().enumerate() {
        let n = i + 1;
        let Ok(arr) = <[u8; 64]>::try_from(blob.as_slice()) else {
            v.bad.push(format!(
                "ed25519 signature #{n}: malformed ({} bytes, expected 64)",
                blob.len()
            ));
            continue;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&arr);
        match keys
            .keys
            .iter()
            .find(|k| k.verify_strict(data, &sig).is_ok())
        {
            Some(k) => v.good.push(Signer {
                kind: SigKind::Ed25519,
                key: BASE64_STANDARD.encode(k.as_bytes()),
                user_id: None,
                subkey: None,
            }),
            None => v.bad.push(format!(
                "ed25519 signature #{n}: not made by any of the {} trusted key(s), or bad",
                keys.keys.len()
            )),
        }
    }
    v
}

/// The OpenPGP keyrings in `gpg_files` merged into one, and the ed25519
/// keys given in base64 and in `ed25519_files` merged into one.
pub fn load_keys(
    gpg_files: &[std::path::PathBuf],
    ed25519_keys: &[String],
    ed25519_files: &[std::path::PathBuf],
) -> Result<(Option<Keyring>, Option<Ed25519Keys>)> {
    let mut gpg: Option<Keyring> = None;
    for p in gpg_files {
        let k = Keyring::load(p).with_context(|| format!("keyring {}", p.display()))?;
        match &mut gpg {
            Some(all) => all.merge(k),
            None => gpg = Some(k),
        }
    }
    let mut keys: Vec<Ed25519Keys> = Vec::new();
    for k in ed25519_keys {
        keys.push(Ed25519Keys::from_base64(k).with_context(|| format!("ed25519 key {k:?}"))?);
    }
    for p in ed25519_files {
        keys.push(
            Ed25519Keys::load_file(p)
                .with_context(|| format!("ed25519 key file {}", p.display()))?,
        );
    }
    let mut ed25519: Option<Ed25519Keys> = None;
    for k in keys {
        match &mut ed25519 {
            Some(all) => all.merge(k),
            None => ed25519 = Some(k),
        }
    }
    Ok((gpg, ed25519))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ostree::variant::{bytes_list, dict};
    use ed25519_dalek::Signer as _;

    fn meta(key: &str, sigs: &[Vec<u8>]) -> Vec<u8> {
        dict(vec![(key, bytes_list(sigs), "aay")]).to_bytes()
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn ed25519_roundtrip() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pk = BASE64_STANDARD.encode(sk.verifying_key().as_bytes());
        let keys = Ed25519Keys::from_base64(&pk).unwrap();
        let sig = sk.sign(b"data").to_bytes().to_vec();
        let m = meta(ED25519_KEY, &[sig, vec![1, 2, 3]]);
        let v = verify_ed25519(b"data", Some(&m), &keys);
        assert_eq!(v.good.len(), 1);
        assert_eq!(v.good[0].key, pk);
        assert_eq!(v.bad.len(), 1, "{v:?}");
        assert!(v.bad[0].contains("3 bytes"), "{v:?}");
        assert!(verify_ed25519(b"datA", Some(&m), &keys).good.is_empty());
    }

    #[test]
    fn unsigned_and_wrong_type() {
        let keys = Ed25519Keys::new();
        assert!(verify_ed25519(b"x", None, &keys).is_unsigned());
        let other = meta("something.else", &[vec![1]]);
        assert!(verify_ed25519(b"x", Some(&other), &keys).is_unsigned());
        let s = dict(vec![(
            ED25519_KEY,
            crate::ostree::variant::V::Str(b"no"),
            "s",
        )])
        .to_bytes();
        let v = verify_ed25519(b"x", Some(&s), &keys);
        assert!(v.good.is_empty() && v.bad.len() == 1, "{v:?}");
        // Arbitrary bytes as metadata never panic.
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = verify_ed25519(b"x", Some(&junk), &keys);
            let _ = verify_gpg(b"x", Some(&junk), &Keyring::new());
        }
    }

    #[test]
    fn gpg_garbage_is_bad_not_panic() {
        let blobs = vec![
            vec![],
            vec![0xff; 10],
            b"hello".to_vec(),
            vec![0x89, 0x01, 0x33, 0x04, 0x00],
            vec![0xc2, 0x05, 0x04, 0x00, 0x16, 0x0a, 0x00],
        ];
        let m = meta(GPG_KEY, &blobs);
        let v = verify_gpg(b"x", Some(&m), &Keyring::new());
        assert!(v.good.is_empty());
        assert_eq!(v.bad.len(), blobs.len(), "{v:?}");
        assert!(v.require_good("commit").is_err());
    }

    #[test]
    fn ed25519_key_errors() {
        let e = Ed25519Keys::from_base64("not base64!")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid base64"), "{e}");
        let e = Ed25519Keys::from_base64(&BASE64_STANDARD.encode([1u8; 16]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 bytes"), "{e}");
        let e = Ed25519Keys::from_base64(&BASE64_STANDARD.encode([1u8; 64]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret key"), "{e}");
        let e = format!(
            "{:#}",
            Ed25519Keys::parse_list("# c\n\nAAAA!\n").unwrap_err()
        );
        assert!(e.contains("line 3"), "{e}");
    }

    proptest::proptest! {
        /// Arbitrary signature blobs (often starting like a signature
        /// packet) are reported, never a panic.
        #[test]
        fn arbitrary_signature_blobs(
            head in proptest::sample::select(vec![vec![], vec![0x88], vec![0x89, 0x01], vec![0xc2], vec![0x04, 0x00]]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let mut blob = head;
            if blob.len() == 1 {
                blob.push(body.len().min(255) as u8);
            }
            blob.extend(body);
            let m = meta(GPG_KEY, &[blob]);
            let v = verify_gpg(b"x", Some(&m), &Keyring::new());
            proptest::prop_assert!(v.good.is_empty() && !v.bad.is_empty());
        }

        /// Arbitrary keyring bytes: an error or a keyring, never a panic.
        #[test]
        fn arbitrary_keyrings(
            head in proptest::sample::select(vec![vec![], vec![0x99], vec![0xc6], b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n".to_vec()]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let mut b = head;
            b.extend(body);
            let _ = Keyring::from_bytes(&b);
        }
    }

    #[test]
    fn keyring_errors() {
        assert!(Keyring::from_bytes(b"").is_err());
        assert!(Keyring::from_bytes(b"hello").is_err());
        assert!(Keyring::from_bytes(&[0x99, 0x00, 0x01, 0x04]).is_err());
    }
}
