// SPDX-License-Identifier: GPL-2.0
/* The certificate observer: uprobes on OpenSSL 3 in user processes.
 *
 * A TLS client parses each certificate of the server's chain with d2i_X509
 * (libcrypto) while OpenSSL runs the handshake, which happens inside
 * SSL_do_handshake, SSL_connect, SSL_accept or, implicitly, SSL_read(_ex),
 * SSL_peek(_ex) and SSL_write(_ex) (libssl). d2i_X509 is also called for
 * every CA certificate a process loads, so a thread is marked while it is
 * inside one of those SSL_* calls (entry and return probes) and not inside
 * X509_verify_cert (which loads CA files lazily); only d2i_X509 calls made
 * while marked are peer certificates. The SNI is taken from
 * SSL_set_tlsext_host_name, a macro for SSL_ctrl(ssl, 55, 0, name), and
 * tied to the SSL object the handshake runs on.
 *
 * Each peer certificate goes to user space through the cert_events ring
 * buffer: exactly its DER bytes (up to cert_config.max_der), with pid, tid,
 * comm, SNI and time. The DER is named by a keyed hash: a process that sent
 * the same certificate within the dedup window sends only the key (a
 * reference record); and with ct.enforce: kill, a process parsing a
 * certificate the agent already judged block gets SIGKILL. The first
 * sighting is always let through: the judgement is made in user space. */
#include "nexus_common.h"
#include <bpf/bpf_tracing.h>
#include "nexus_procs.h"
#include "nexus_cert.h"
#include "cert_helpers.h"

#ifndef NEXUS_CERT_MAX_THREADS
#define NEXUS_CERT_MAX_THREADS 16384    /* config: cert.max_threads */
#endif
#ifndef NEXUS_CERT_MAX_VERDICTS
#define NEXUS_CERT_MAX_VERDICTS 65536   /* config: cert.max_verdicts */
#endif
#ifndef NEXUS_CERT_RINGBUF
#define NEXUS_CERT_RINGBUF (1 << 20)    /* config: cert.ring_buffer_kib */
#endif

/* Records for the agent (struct nexus_cert_event, header + copied DER). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NEXUS_CERT_RINGBUF);
} cert_events SEC(".maps");

/* Per-CPU counters, indexed by enum nexus_cert_counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NEXUS_CERT_CNT__MAX);
	__type(key, __u32);
	__type(value, __u64);
} cert_counters SEC(".maps");

/* Settings written by `up`; see struct nexus_cert_config. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_cert_config);
} cert_config SEC(".maps");

/* The hash key, random, written once by `up`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_cert_secret);
} cert_secret SEC(".maps");

/* Threads inside an SSL_* call. LRU: a thread that dies inside one is forgotten. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_THREADS);
	__type(key, __u64);
	__type(value, struct nexus_cert_thread);
} cert_threads SEC(".maps");

/* The SNI set on each SSL object; removed by SSL_free. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_THREADS);
	__type(key, struct nexus_cert_sni_key);
	__type(value, struct nexus_cert_sni);
} cert_sni SEC(".maps");

/* Certificates recently sent in full, per process: value = when (ns). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_THREADS);
	__type(key, struct nexus_cert_recent_key);
	__type(value, __u64);
} cert_recent SEC(".maps");

/* Verdicts by in-kernel key, written by the agent: what kill mode acts on. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_VERDICTS);
	__type(key, __u64);
	__type(value, struct nexus_cert_verdict);
} cert_verdicts SEC(".maps");

/* Verdicts by SHA-256, written by the agent, for other programs and `maps dump`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_VERDICTS);
	__type(key, struct nexus_cert_sha256);
	__type(value, struct nexus_cert_verdict);
} cert_threat_cache SEC(".maps");

/* CT findings by SHA-256, written by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NEXUS_CERT_MAX_VERDICTS);
	__type(key, struct nexus_cert_sha256);
	__type(value, struct nexus_ct_status);
} ct_log_entries SEC(".maps");

/* Scratch space: a record is too big for the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_cert_event);
} cert_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nexus_cert_sni);
} cert_sni_scratch SEC(".maps");

/* Never read: put the enums user space names things by into the object's BTF. */
const volatile enum nexus_cert_counter nexus_cert_counter_names = NEXUS_CERT_CNT__MAX;
const volatile enum nexus_cert_flag nexus_cert_flag_names = NEXUS_CERT_F_SHORT_VALIDITY;
const volatile enum nexus_cert_event_type nexus_cert_event_type_names = NEXUS_CERT_EV_CERT;
const volatile enum nexus_cert_event_flag nexus_cert_event_flag_names = NEXUS_CERT_EVF_TRUNCATED;

static __always_inline void cert_count(enum nexus_cert_counter c)
{
	percpu_add(&cert_counters, c, 1);
}

/* ---------------------------------------------------------------- marking */

/* Entry of every SSL_* call that can run a handshake; arg 1 is the SSL *. */
SEC("uprobe")
int BPF_KPROBE(cert_tls_enter, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_cert_thread *t, fresh = {};

	/* Only this thread touches its entry: no atomics needed. */
	t = bpf_map_lookup_elem(&cert_threads, &id);
	if (t) {
		if (t->depth < NEXUS_CERT_MAX_DEPTH)
			t->depth++;
		else
			cert_count(NEXUS_CERT_CNT_TOO_DEEP);
		return 0;
	}
	fresh.ssl = (__u64)ssl;
	fresh.chain_id = bpf_ktime_get_ns();
	fresh.depth = 1;
	bpf_map_update_elem(&cert_threads, &id, &fresh, BPF_ANY);
	return 0;
}

/* The chain a call parsed is complete when the outermost call returns. */
static __always_inline void send_chain_end(const struct nexus_cert_thread *t, __u64 id)
{
	struct nexus_cert_event *ev;
	__u32 zero = 0;

	ev = bpf_map_lookup_elem(&cert_scratch, &zero);
	if (!ev)
		return;
	__builtin_memset(ev, 0, offsetof(struct nexus_cert_event, der));
	ev->time_ns = bpf_ktime_get_ns();
	ev->chain_id = t->chain_id;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->type = NEXUS_CERT_EV_END;
	ev->index = t->certs;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	if (bpf_ringbuf_output(&cert_events, ev, offsetof(struct nexus_cert_event, der), 0))
		cert_count(NEXUS_CERT_CNT_DROPPED);
	else
		cert_count(NEXUS_CERT_CNT_CHAINS);
}

SEC("uretprobe")
int BPF_KRETPROBE(cert_tls_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_cert_thread *t;

	t = bpf_map_lookup_elem(&cert_threads, &id);
	if (!t)
		return 0;               /* entered before the probes were attached */
	if (t->depth > 1) {
		t->depth--;
		return 0;
	}
	if (t->certs)
		send_chain_end(t, id);
	bpf_map_delete_elem(&cert_threads, &id);
	return 0;
}

/* X509_verify_cert may load CA files (d2i_X509 again): not peer certificates. */
SEC("uprobe")
int BPF_KPROBE(cert_vfy_enter)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_cert_thread *t = bpf_map_lookup_elem(&cert_threads, &id);

	if (t && t->verify_depth < NEXUS_CERT_MAX_DEPTH)
		t->verify_depth++;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(cert_vfy_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct nexus_cert_thread *t = bpf_map_lookup_elem(&cert_threads, &id);

	if (t && t->verify_depth)
		t->verify_depth--;
	return 0;
}

/* ---------------------------------------------------------------- SNI */

SEC("uprobe")
int BPF_KPROBE(cert_sni_set, void *ssl, int cmd, long larg, const char *name)
{
	struct nexus_cert_sni_key key = {};
	struct nexus_cert_sni *buf;
	__u32 zero = 0;

	if (cmd != SSL_CTRL_SET_TLSEXT_HOSTNAME)
		return 0;
	key.ssl = (__u64)ssl;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	if (larg != TLSEXT_NAMETYPE_HOST_NAME || !name) {
		bpf_map_delete_elem(&cert_sni, &key);   /* a NULL name clears the SNI */
		return 0;
	}
	buf = bpf_map_lookup_elem(&cert_sni_scratch, &zero);
	if (!buf)
		return 0;
	__builtin_memset(buf, 0, sizeof(*buf));
	if (bpf_probe_read_user_str(buf->name, sizeof(buf->name), name) < 0) {
		cert_count(NEXUS_CERT_CNT_SNI_EFAULT);
		bpf_map_delete_elem(&cert_sni, &key);
		return 0;
	}
	bpf_map_update_elem(&cert_sni, &key, buf, BPF_ANY);
	cert_count(NEXUS_CERT_CNT_SNI_SET);
	return 0;
}

/* An SSL object's address is reused after SSL_free: forget its name. */
SEC("uprobe")
int BPF_KPROBE(cert_ssl_free, void *ssl)
{
	struct nexus_cert_sni_key key = {};

	key.ssl = (__u64)ssl;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_map_delete_elem(&cert_sni, &key);
	return 0;
}

/* ---------------------------------------------------------------- certificates */

struct hash_ctx {
	struct sip_state s;
	__u32 copied;
	__u32 pad;
};

/* bpf_loop callback: hash word i of the scratch record's DER. */
static long hash_word(__u32 i, void *data)
{
	struct hash_ctx *h = data;
	struct nexus_cert_event *ev;
	__u32 zero = 0, left;
	__u64 w;

	ev = bpf_map_lookup_elem(&cert_scratch, &zero);
	if (!ev || i >= NEXUS_CERT_MAX_WORDS)
		return 1;
	w = *(__u64 *)&ev->der[i * NEXUS_CERT_WORD];
	left = h->copied - i * NEXUS_CERT_WORD;
	if (left < NEXUS_CERT_WORD)     /* bytes past the DER are stale: hash zeros */
		w &= (1ULL << (left * BITS_PER_BYTE)) - 1;
	sip_word(&h->s, w);
	return 0;
}

static __always_inline __u64 der_key(__u32 copied, __u32 der_len)
{
	struct hash_ctx h = {};
	struct nexus_cert_secret *k;
	__u32 zero = 0;

	k = bpf_map_lookup_elem(&cert_secret, &zero);
	if (!k)
		return 0;
	sip_init(&h.s, k->k0, k->k1);
	h.copied = copied;
	bpf_loop((copied + NEXUS_CERT_WORD - 1) / NEXUS_CERT_WORD, hash_word, &h, 0);
	sip_word(&h.s, ((__u64)copied << 32) | der_len);
	return sip_final(&h.s);
}

/* Has this process sent this certificate in full within the window? */
static __always_inline bool sent_recently(__u64 key, __u32 tgid, const struct nexus_cert_config *cfg)
{
	struct nexus_cert_recent_key rk = {.key = key, .tgid = tgid};
	__u64 now = bpf_ktime_get_ns(), *last;

	if (!cfg->dedup_window_ns)
		return false;
	last = bpf_map_lookup_elem(&cert_recent, &rk);
	if (last && now - *last < cfg->dedup_window_ns)
		return true;
	bpf_map_update_elem(&cert_recent, &rk, &now, BPF_ANY);
	return false;
}

static __always_inline void forget_sent(__u64 key, __u32 tgid)
{
	struct nexus_cert_recent_key rk = {.key = key, .tgid = tgid};

	bpf_map_delete_elem(&cert_recent, &rk);
}

/* d2i_X509(X509 **out, const unsigned char **in, long len): *in points at the DER. */
SEC("uprobe")
int BPF_KPROBE(cert_d2i, void *out, const unsigned char **in, long len)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, zero = 0, copied = 0, der_len = 0, max_der, size;
	const struct nexus_cert_config *cfg;
	struct nexus_cert_sni_key sk = {};
	struct nexus_cert_verdict *verdict;
	struct nexus_cert_thread *t;
	struct nexus_proc_stats *ps;
	struct nexus_cert_event *ev;
	struct nexus_cert_sni *sni;
	__u8 hdr[NEXUS_CERT_HDR_PEEK];
	const unsigned char *der;

	t = bpf_map_lookup_elem(&cert_threads, &id);
	if (!t || !t->depth) {
		cert_count(NEXUS_CERT_CNT_OUTSIDE_TLS);
		return 0;
	}
	if (t->verify_depth) {
		cert_count(NEXUS_CERT_CNT_IN_VERIFY);
		return 0;
	}
	cfg = bpf_map_lookup_elem(&cert_config, &zero);
	ev = bpf_map_lookup_elem(&cert_scratch, &zero);
	if (!cfg || !ev)
		return 0;
	cert_count(NEXUS_CERT_CNT_SEEN);
	ps = proc_stats_task();         /* named after the main thread, like metrics does */
	if (ps)
		__sync_fetch_and_add(&ps->cert_validations, 1);

	__builtin_memset(ev, 0, offsetof(struct nexus_cert_event, der));
	ev->time_ns = bpf_ktime_get_ns();
	ev->chain_id = t->chain_id;
	ev->pid = tgid;
	ev->tid = (__u32)id;
	ev->type = NEXUS_CERT_EV_CERT;
	ev->index = t->certs;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	sk.ssl = t->ssl;
	sk.tgid = tgid;
	sni = bpf_map_lookup_elem(&cert_sni, &sk);
	if (sni) {
		__builtin_memcpy(ev->sni, sni->name, sizeof(ev->sni));
		ev->flags |= NEXUS_CERT_EVF_SNI;
	}

	/* Copy exactly the certificate: a fixed-size read would send neighbouring heap. */
	if (bpf_probe_read_user(&der, sizeof(der), in) ||
	    bpf_probe_read_user(hdr, sizeof(hdr), der)) {
		cert_count(NEXUS_CERT_CNT_EFAULT);
		ev->flags |= NEXUS_CERT_EVF_EFAULT;
		goto send;
	}
	der_len = der_total_len(hdr);
	if (!der_len || len <= 0) {
		cert_count(NEXUS_CERT_CNT_NOT_DER);
		return 0;
	}
	if (der_len > len)
		der_len = len;          /* OpenSSL will not read past len either */
	max_der = cfg->max_der ? cfg->max_der : NEXUS_CERT_DEFAULT_DER;
	if (max_der > NEXUS_CERT_MAX_DER)
		max_der = NEXUS_CERT_MAX_DER;
	copied = der_len;
	if (copied > max_der) {
		copied = max_der;
		ev->flags |= NEXUS_CERT_EVF_TRUNCATED;
		cert_count(NEXUS_CERT_CNT_TRUNCATED);
	}
	if (copied > NEXUS_CERT_MAX_DER)        /* for the verifier; max_der already is */
		copied = NEXUS_CERT_MAX_DER;
	if (bpf_probe_read_user(ev->der, copied, der)) {
		cert_count(NEXUS_CERT_CNT_EFAULT);
		ev->flags |= NEXUS_CERT_EVF_EFAULT;
		copied = 0;
		goto send;
	}
	ev->der_len = der_len;
	ev->copied = copied;
	ev->key = der_key(copied, der_len);

	verdict = bpf_map_lookup_elem(&cert_verdicts, &ev->key);
	if (verdict) {
		ev->verdict = verdict->verdict;
		if (verdict->verdict == NEXUS_CERT_BLOCK && cfg->enforce == NEXUS_CERT_KILL) {
			if (bpf_send_signal(NEXUS_SIGKILL) == 0) {
				ev->flags |= NEXUS_CERT_EVF_KILLED;
				cert_count(NEXUS_CERT_CNT_KILLED);
			} else {
				cert_count(NEXUS_CERT_CNT_KILL_FAILED);
			}
		}
	}
	if (!(ev->flags & NEXUS_CERT_EVF_KILLED) && sent_recently(ev->key, tgid, cfg)) {
		ev->type = NEXUS_CERT_EV_REF;
		cert_count(NEXUS_CERT_CNT_DEDUPLICATED);
		copied = 0;
		ev->copied = 0;
	}
send:
	t->certs++;
	size = offsetof(struct nexus_cert_event, der) + copied;
	if (size > sizeof(*ev))
		return 0;
	if (bpf_ringbuf_output(&cert_events, ev, size, 0)) {
		cert_count(NEXUS_CERT_CNT_DROPPED);
		if (ev->type == NEXUS_CERT_EV_CERT && copied)
			forget_sent(ev->key, tgid);     /* so the next sighting is sent in full */
		return 0;
	}
	if (ev->type == NEXUS_CERT_EV_CERT)
		cert_count(NEXUS_CERT_CNT_SENT);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
