"""Prometheus exposition of the stats figures (prometheus_client), read from the
pinned maps at every scrape.

Metric names (all prefixed nexus_):
- nexus_up                                   1 when nexus is up (pins exist)
- nexus_dns_<counter>_total                  every nexus_counters slot (queries, cache_hits, policy_blocked, ...)
- nexus_dns_latency_seconds{path}            histogram per latency path (kernel, resolver)
- nexus_host_<counter>_total                 every nexus_mcounters slot (dns_queries, tls_connections, ...)
- nexus_process_<field>_total{pid,comm}      per-process figures, the busiest metrics.export_processes
- nexus_netif_receive_packets_total{interface,netns}, nexus_netif_receive_bytes_total{...}
- nexus_cpu_samples_total{event}, nexus_cpu_samples_in_nexus_total{event},
  nexus_cpu_samples_in_program_total{event,program}
- nexus_perf_event_available{event}          1 if this host can sample the event
- nexus_map_entries{map}, nexus_map_max_entries{map}

Histogram buckets. The kernel's bucket i counts integer durations in
[2^i, 2^(i+1)) ns, i.e. d <= 2^(i+1) - 1 ns; so bucket i is exposed with
le = (2^(i+1) - 1) ns (in seconds) and a duration of exactly 2^k ns lands in
le=(2^(k+1)-1)ns and not in le=(2^k-1)ns: correct at the edges. Buckets are
cumulative; the last kernel bucket also holds anything longer, so it is not
given an le of its own: it is only in +Inf, which equals _count, the kernel's
own count.
"""
from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from nexusctl.errors import OperationFailed, UsageError
from nexusctl.ops import stats as st

NS_PER_S = 1_000_000_000


def le_seconds(i: int) -> float:
    """Inclusive upper bound (seconds) of log2 bucket i for integer-ns durations."""
    return (2 ** (i + 1) - 1) / NS_PER_S


def cumulative_buckets(buckets: list[int], count: int) -> list[tuple[str, int]]:
    """[(le, cumulative count)] ending with ("+Inf", count)."""
    from prometheus_client.utils import floatToGoString
    out, acc = [], 0
    for i, n in enumerate(buckets[:-1]):
        acc += n
        out.append((floatToGoString(le_seconds(i)), min(acc, count)))
    out.append(("+Inf", count))
    return out


class NexusCollector:
    """A prometheus_client collector: every collect() reads the pinned maps."""

    def __init__(self, app):
        self.app = app

    def describe(self):
        return []           # names depend on the loaded objects' BTF: no eager registration check

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        app = self.app
        cfg = app.config
        up = Path(cfg.pin_root).exists()
        g = GaugeMetricFamily("nexus_up", "1 when nexus is up on this host (its pins exist)")
        g.add_metric([], 1 if up else 0)
        yield g

        for name, v in sorted(st.read_counters(app).items()):
            yield CounterMetricFamily(f"nexus_dns_{name}", f"DNS programs counter {name} (summed over CPUs)", value=v)

        lat = st.read_latency(app)
        if lat:
            h = HistogramMetricFamily("nexus_dns_latency_seconds",
                                      "DNS query-to-answer latency per path (kernel: answered in XDP; "
                                      "resolver: XDP ingress to TC egress)", labels=["path"])
            for path, hist in sorted(lat.items()):
                h.add_metric([path], cumulative_buckets(hist["buckets"], hist["count"]),
                             sum_value=hist["sum_ns"] / NS_PER_S)
            yield h

        for name, v in sorted(st.read_host_counters(app).items()):
            yield CounterMetricFamily(f"nexus_host_{name}", f"metrics tracepoints counter {name} (whole host)",
                                      value=v)

        procs = st.read_processes(app, cfg.metrics.export_processes)
        fams = {f: CounterMetricFamily(f"nexus_process_{f}", f"per-process {f.replace('_', ' ')} "
                                       f"(the {cfg.metrics.export_processes} busiest processes)",
                                       labels=["pid", "comm"]) for f in st.PROC_FIELDS}
        for p in procs:
            for f, fam in fams.items():
                if f in p:
                    fam.add_metric([str(p["pid"]), p["comm"]], p[f])
        yield from fams.values()

        pk = CounterMetricFamily("nexus_netif_receive_packets", "packets received per interface",
                                 labels=["interface", "netns"])
        by = CounterMetricFamily("nexus_netif_receive_bytes", "bytes received per interface (frames, L2 header "
                                 "included)", labels=["interface", "netns"])
        for i in st.read_interfaces(app):
            pk.add_metric([i["name"], i["netns"]], i["rx_packets"])
            by.add_metric([i["name"], i["netns"]], i["rx_bytes"])
        yield pk
        yield by

        cpu = st.read_cpu(app)
        avail = GaugeMetricFamily("nexus_perf_event_available", "1 if this host can sample the perf event",
                                  labels=["event"])
        samples = CounterMetricFamily("nexus_cpu_samples", "CPU samples taken per perf event", labels=["event"])
        in_nexus = CounterMetricFamily("nexus_cpu_samples_in_nexus", "CPU samples that hit a nexus program",
                                       labels=["event"])
        in_prog = CounterMetricFamily("nexus_cpu_samples_in_program", "CPU samples that hit a given nexus program",
                                      labels=["event", "program"])
        for e in cpu["events"]:
            avail.add_metric([e["event"]], 1 if e["available"] else 0)
            samples.add_metric([e["event"]], e["samples"])
            in_nexus.add_metric([e["event"]], e["in_nexus"])
            for prog, n in e["programs"].items():
                in_prog.add_metric([e["event"], prog], n)
        yield from (avail, samples, in_nexus, in_prog)

        ent = GaugeMetricFamily("nexus_map_entries", "entries in a pinned map", labels=["map"])
        mx = GaugeMetricFamily("nexus_map_max_entries", "capacity of a pinned map", labels=["map"])
        for m in st.read_maps(app):
            if m["entries"] is not None:
                ent.add_metric([m["name"]], m["entries"])
            mx.add_metric([m["name"]], m["max_entries"])
        yield ent
        yield mx


def registry(app):
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NexusCollector(app))
    return reg


def exposition(app) -> bytes:
    from prometheus_client import generate_latest
    return generate_latest(registry(app))


def textfile(app, path: str) -> dict:
    """Write the exposition for node_exporter's textfile collector (atomically:
    a temporary file beside it, then rename)."""
    from prometheus_client import write_to_textfile
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a directory", "give a file name, e.g. /var/lib/node_exporter/textfile/nexus.prom")
    if not p.parent.is_dir():
        raise UsageError(f"{p.parent} does not exist", "create the textfile collector directory first")
    try:
        write_to_textfile(str(p), registry(app))
    except OSError as e:
        raise OperationFailed(f"cannot write {p}: {e.strerror or e}") from None
    return {"changed": True, "path": str(p), "bytes": p.stat().st_size}


def _server(host: str, port: int, wsgi_app):
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise UsageError(f"cannot resolve listen address {host!r}: {e.strerror}") from None

    class Server(ThreadingMixIn, WSGIServer):
        address_family = family
        daemon_threads = True
        allow_reuse_address = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    try:
        return make_server(host, port, wsgi_app, server_class=Server, handler_class=Quiet)
    except OSError as e:
        raise OperationFailed(f"cannot listen on {host}:{port}: {e.strerror or e}",
                              "pick another --listen address or stop what holds the port") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(app, host: str, port: int, on_ready=None, stop: threading.Event | None = None) -> None:
    """Serve /metrics until interrupted (Ctrl-C or SIGTERM), or until `stop` is set."""
    from prometheus_client import make_wsgi_app
    srv = _server(host, port, make_wsgi_app(registry(app)))
    if on_ready:
        h, p = srv.server_address[:2]
        on_ready(f"http://{'[' + h + ']' if ':' in h else h}:{p}/metrics")
    prev = None
    if threading.current_thread() is threading.main_thread():
        prev = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if stop is None:
            srv.serve_forever()
        else:
            t = threading.Thread(target=srv.serve_forever, daemon=True)
            t.start()
            stop.wait()
            srv.shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)


def listen_address(app, listen: str | None) -> tuple[str, int]:
    from nexusctl.config.model import parse_listen
    try:
        return parse_listen(listen or app.config.metrics.listen)
    except ValueError as e:
        raise UsageError(f"--listen: {e}") from None

