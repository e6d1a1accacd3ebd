/* SPDX-License-Identifier: GPL-2.0 */
/* The certificate observer's limits, enums and the structs user space reads
 * (the ring buffer record, the verdict maps, the config). They live here
 * rather than in nexus_structs.h because only nexus_cert.c and the cert agent
 * use them; user space reads every layout from BTF (nexusctl/tools/btf.py). */
#ifndef NEXUS_CERT_H
#define NEXUS_CERT_H

/* ---- limits (overridable at build time) ---- */
#ifndef NEXUS_CERT_MAX_DER
#define NEXUS_CERT_MAX_DER 16384        /* DER bytes a record can carry; cert.max_der <= this */
#endif
#define NEXUS_CERT_WORD 8               /* the keyed hash eats the DER in 8-byte words */
#define BITS_PER_BYTE 8
#define NEXUS_CERT_MAX_WORDS (NEXUS_CERT_MAX_DER / NEXUS_CERT_WORD)
#ifndef NEXUS_CERT_DEFAULT_DER
#define NEXUS_CERT_DEFAULT_DER 8192     /* used while cert_config.max_der is 0 */
#endif
#define NEXUS_CERT_SNI_LEN 256          /* a DNS name is at most 253 characters + NUL */
#define NEXUS_CERT_HDR_PEEK 8           /* bytes read first to find the DER length */
#define NEXUS_CERT_MAX_LEN_OCTETS 3     /* DER long-form length octets we accept (< 16 MiB) */
#ifndef NEXUS_CERT_MAX_DEPTH
#define NEXUS_CERT_MAX_DEPTH 32         /* nested SSL_* calls tracked per thread */
#endif
#define NEXUS_CT_MAX_LOGS 8             /* valid SCT log ids kept per certificate */
#define NEXUS_CT_LOG_ID_PREFIX 8        /* ...their first bytes */
#define NEXUS_SHA256_LEN 32

/* ---- OpenSSL and the kernel, as seen from the probes ---- */
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55 /* SSL_set_tlsext_host_name(s, n) == SSL_ctrl(s, 55, 0, n) */
#define TLSEXT_NAMETYPE_HOST_NAME 0
#define DER_TAG_SEQUENCE 0x30           /* a certificate is one DER SEQUENCE */
#define DER_LEN_LONG_FORM 0x80          /* length byte: long form when set, then the octet count */
#define DER_LEN_OCTETS_MASK 0x7F
#define NEXUS_SIGKILL 9

/* Per-CPU counters, one slot each in cert_counters, named after their cause
 * (user space strips NEXUS_CERT_CNT_ and lower-cases the rest). */
enum nexus_cert_counter {
	NEXUS_CERT_CNT_SEEN = 0,                /* d2i_X509 inside a TLS call (a peer certificate) */
	NEXUS_CERT_CNT_SENT,                    /* records with the DER put in the ring buffer */
	NEXUS_CERT_CNT_DEDUPLICATED,            /* sent as a reference: this process sent the same DER recently */
	NEXUS_CERT_CNT_DROPPED,                 /* ring buffer full: the record was lost */
	NEXUS_CERT_CNT_TRUNCATED,               /* DER longer than max_der: the first max_der bytes were sent */
	NEXUS_CERT_CNT_EFAULT,                  /* DER bytes could not be read (page not resident) */
	NEXUS_CERT_CNT_NOT_DER,                 /* the bytes did not start with a DER SEQUENCE */
	NEXUS_CERT_CNT_OUTSIDE_TLS,             /* d2i_X509 outside any SSL_* call (CA files, apps) */
	NEXUS_CERT_CNT_IN_VERIFY,               /* d2i_X509 inside X509_verify_cert (lazy CA loading) */
	NEXUS_CERT_CNT_CHAINS,                  /* chain-end records sent */
	NEXUS_CERT_CNT_SNI_SET,                 /* SSL_set_tlsext_host_name calls recorded */
	NEXUS_CERT_CNT_SNI_EFAULT,              /* ...whose name could not be read */
	NEXUS_CERT_CNT_KILLED,                  /* SIGKILL sent (ct.enforce: kill, verdict block) */
	NEXUS_CERT_CNT_KILL_FAILED,             /* bpf_send_signal refused */
	NEXUS_CERT_CNT_TOO_DEEP,                /* SSL_* nesting over NEXUS_CERT_MAX_DEPTH */
	NEXUS_CERT_CNT__MAX,
};

/* What a ring buffer record carries. */
enum nexus_cert_event_type {
	NEXUS_CERT_EV_CERT = 1,                 /* a certificate, DER in der[] */
	NEXUS_CERT_EV_REF = 2,                  /* a certificate this process sent recently: key only */
	NEXUS_CERT_EV_END = 3,                  /* the SSL_* call that parsed a chain returned */
};

/* Bits of nexus_cert_event.flags. */
enum nexus_cert_event_flag {
	NEXUS_CERT_EVF_TRUNCATED = 1 << 0,      /* der[] holds the first `copied` of der_len bytes */
	NEXUS_CERT_EVF_EFAULT = 1 << 1,         /* the DER could not be read: der[] is empty */
	NEXUS_CERT_EVF_KILLED = 1 << 2,         /* the process was sent SIGKILL on this sighting */
	NEXUS_CERT_EVF_SNI = 1 << 3,            /* sni[] holds the name the client asked for */
};

/* The agent's judgement. Packed so it is one byte in the structs below. */
enum __attribute__((packed)) nexus_cert_verdict_kind {
	NEXUS_CERT_UNKNOWN = 0,
	NEXUS_CERT_ALLOW = 1,
	NEXUS_CERT_WARN = 2,
	NEXUS_CERT_BLOCK = 3,
};

/* Bits of nexus_cert_verdict.flags; the names after NEXUS_CERT_F_ are the
 * flag names of `cert events` (CONTRACT.md). */
enum nexus_cert_flag {
	NEXUS_CERT_F_SHORT_VALIDITY = 1 << 0,
	NEXUS_CERT_F_WILDCARD_ABUSE = 1 << 1,
	NEXUS_CERT_F_UNKNOWN_CA = 1 << 2,
	NEXUS_CERT_F_WEAK_KEY = 1 << 3,
	NEXUS_CERT_F_DOMAIN_MISMATCH = 1 << 4,
	NEXUS_CERT_F_SELF_SIGNED = 1 << 5,
	NEXUS_CERT_F_EXPIRED = 1 << 6,
	NEXUS_CERT_F_NO_CT_LOGS = 1 << 7,
	NEXUS_CERT_F_REVOKED = 1 << 8,
	NEXUS_CERT_F_DGA_DOMAIN = 1 << 9,
};

enum __attribute__((packed)) nexus_cert_enforce {
	NEXUS_CERT_AUDIT = 0,                   /* record verdicts, never act */
	NEXUS_CERT_KILL = 1,                    /* SIGKILL a process parsing a certificate judged block */
};

/* One entry in cert_config, written by `up`. Zero means default everywhere. */
struct nexus_cert_config {
	__u64 dedup_window_ns;                  /* 0: every sighting carries the DER */
	__u32 max_der;                          /* DER bytes copied (<= NEXUS_CERT_MAX_DER); 0: default */
	enum nexus_cert_enforce enforce;
	__u8 pad[3];
};

/* One entry in cert_secret: the key of the in-kernel hash, random, written
 * once by `up`. Knowing it would let a server pick DER bytes that collide. */
struct nexus_cert_secret {
	__u64 k0;
	__u64 k1;
};

/* A ring buffer record. Only the header and `copied` DER bytes are sent. */
struct nexus_cert_event {
	__u64 time_ns;                          /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 chain_id;                         /* start of the outermost SSL_* call: groups one chain */
	__u64 key;                              /* keyed hash of the DER: dedup and verdict key */
	__u32 pid;                              /* tgid */
	__u32 tid;
	__u32 der_len;                          /* the certificate's DER length */
	__u32 copied;                           /* DER bytes in der[] */
	__u16 type;                             /* enum nexus_cert_event_type */
	__u16 index;                            /* position in the chain (0: the leaf); END: chain length */
	__u16 flags;                            /* enum nexus_cert_event_flag bits */
	enum nexus_cert_verdict_kind verdict;   /* cert_verdicts[key] when the record was made */
	__u8 pad;
	char comm[16];
	char sni[NEXUS_CERT_SNI_LEN];
	__u8 der[NEXUS_CERT_MAX_DER];
};

/* Per-thread state while an SSL_* call runs (cert_threads, keyed by pid_tgid). */
struct nexus_cert_thread {
	__u64 ssl;                              /* SSL * of the outermost call, for the SNI */
	__u64 chain_id;
	__u32 depth;                            /* SSL_* calls in progress on this thread */
	__u32 verify_depth;                     /* X509_verify_cert calls in progress */
	__u32 certs;                            /* certificates recorded during the outermost call */
	__u32 pad;
};

/* cert_sni key: the SSL object a name was set on, in its process. */
struct nexus_cert_sni_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct nexus_cert_sni {
	char name[NEXUS_CERT_SNI_LEN];
};

/* cert_recent key: a certificate recently sent in full by a process. */
struct nexus_cert_recent_key {
	__u64 key;
	__u32 tgid;
	__u32 pad;
};

/* Keys of cert_threat_cache and ct_log_entries: the certificate's SHA-256. */
struct nexus_cert_sha256 {
	__u8 bytes[NEXUS_SHA256_LEN];
};

/* A verdict (cert_threat_cache by SHA-256, cert_verdicts by in-kernel key). */
struct nexus_cert_verdict {
	__u8 sha256[NEXUS_SHA256_LEN];
	__u64 key;                              /* the in-kernel key of the same certificate */
	__u64 judged_at;                        /* unix seconds */
	__u32 flags;                            /* enum nexus_cert_flag bits */
	__u16 threat_level;                     /* 0..100 */
	enum nexus_cert_verdict_kind verdict;
	__u8 pad;
};

/* Certificate Transparency findings for one certificate (ct_log_entries). */
struct nexus_ct_status {
	__u8 embedded;                          /* SCTs in the certificate */
	__u8 valid;                             /* signature verified, log usable at the SCT's time */
	__u8 invalid;                           /* signature wrong, or timestamp in the future */
	__u8 unknown;                           /* log not in the log list */
	__u8 unusable;                          /* no issuer to check against, or log not usable */
	__u8 operators;                         /* distinct operators among the valid SCTs */
	__u8 compliant;                         /* meets ct.min_scts / ct.min_operators */
	__u8 pad;
	__u64 earliest_ms;                      /* earliest valid SCT timestamp (ms since the epoch) */
	__u8 logs[NEXUS_CT_MAX_LOGS][NEXUS_CT_LOG_ID_PREFIX]; /* log ids of the valid SCTs */
};

#endif /* NEXUS_CERT_H */
