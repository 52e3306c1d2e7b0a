import Foundation
import Prometheus
import RedoubtCore
import RedoubtStore

/// The server's Prometheus metrics (docs/PROTOCOL.md §8): counters of requests and
/// refusals kept in memory since the process started, and gauges read from the catalog at
/// each scrape. Names follow Prometheus conventions: `redoubt_` prefix, base units
/// (seconds, bytes), `_total` on counters. No label carries a secret, a key, a path or a
/// file name: routes are their templates (`/v1/packs/{id}`), hosts and tenants their names.
public final class ServerMetrics: Sendable {
    /// Counters and histograms that live as long as the process.
    let registry = PrometheusCollectorRegistry()

    public init() {}

    static var requests: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "redoubt_http_requests", unitName: "total",
                             helpText: "API requests by route template, method and status.")
    }
    static var latency: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "redoubt_http_request_duration", unitName: "seconds",
                             helpText: "Time from request to response head, by route template and method.")
    }
    static var refusals: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "redoubt_refused_requests", unitName: "total",
                             helpText: "Requests refused by role or scope, by tenant, role, principal and action.")
    }
    static var refusedConnections: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "redoubt_refused_connections", unitName: "total",
                             helpText: "Connections closed at a connection cap, by the cap's server.toml name.")
    }
    static var cutShortAnswers: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "redoubt_answers_cut_short", unitName: "total",
                             helpText: "Pack answers ended before their length, by reason, tenant and principal.")
    }
    static let latencyBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
        .map { .milliseconds(Int64($0 * 1000)) }

    /// Counts one answered request. `route` is the route's template, or `unmatched`.
    public func request(route: String, method: String, status: Int, duration: Duration) {
        registry.makeCounter(descriptor: Self.requests,
                             labels: [("route", route), ("method", method), ("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: Self.latency, labels: [("route", route), ("method", method)],
                                       buckets: Self.latencyBuckets).record(duration)
    }

    /// Counts one refusal. Anonymous callers count under role `none` and principal `anonymous`.
    public func refused(tenant: String?, role: String?, principal: String?, action: String) {
        registry.makeCounter(descriptor: Self.refusals, labels: [
            ("tenant", tenant ?? "-"), ("role", role ?? "none"), ("principal", principal ?? "anonymous"),
            ("action", action),
        ]).increment()
    }

    /// Counts one connection closed because `limit` (`connections-per-source`, `connections`
    /// or `connections-per-credential`) was reached: a flood from one source shows here.
    public func refusedConnection(limit: String) {
        registry.makeCounter(descriptor: Self.refusedConnections, labels: [("limit", limit)]).increment()
    }

    /// Counts one pack answer ended early: `stalled-reader` (the client took less than a piece
    /// in the idle timeout, and its connection was closed) or `store-error` (the store failed
    /// mid-answer). A restorer that opens downloads and stops reading shows here by name.
    public func answerCutShort(reason: String, tenant: String?, principal: String?) {
        registry.makeCounter(descriptor: Self.cutShortAnswers, labels: [
            ("reason", reason), ("tenant", tenant ?? "-"), ("principal", principal ?? "anonymous"),
        ]).increment()
    }

    /// The text exposition: catalog gauges as of `now`, then the process's counters.
    public func exposition(facts: MonitoringFacts, now: Date, store: any ObjectStore) -> String {
        let g = PrometheusCollectorRegistry()
        Self.gauges(facts, now: now, into: g)
        if let local = store as? LocalStore, let space = Self.freeSpace(local.rootPath) {
            gauge(g, "redoubt_store_free", "bytes", "Free bytes on the local store's filesystem.").set(space.free)
            gauge(g, "redoubt_store_size", "bytes", "Size of the local store's filesystem.").set(space.size)
        }
        return g.emitToString() + registry.emitToString()
    }

    private func gauge(_ r: PrometheusCollectorRegistry, _ name: String, _ unit: String, _ help: String,
                       _ labels: [(String, String)] = []) -> Gauge {
        r.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: unit, helpText: help), labels: labels)
    }

    static func gauges(_ f: MonitoringFacts, now: Date, into r: PrometheusCollectorRegistry) {
        func g(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
            r.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: unit, helpText: help),
                        labels: labels)
        }
        g("redoubt_build_info", "", "Always 1; the server's version.", [("version", RedoubtVersion.string)])
            .set(1.0)
        for h in f.hosts {
            let l = [("tenant", h.tenant), ("host", h.host)]
            g("redoubt_host_snapshots", "", "Snapshots of the host the catalog keeps.", l).set(Double(h.snapshots))
            if let t = h.lastCommit {
                g("redoubt_host_last_commit_timestamp", "seconds",
                  "Server commit time of the host's newest snapshot (Unix time).", l).set(t.timeIntervalSince1970)
            }
            if let since = h.lastCommit ?? h.enrolledAt {
                g("redoubt_host_last_commit_age", "seconds",
                  "Seconds, by the server's clock, since the host's newest commit (or its enrollment if none).", l)
                    .set(max(0, now.timeIntervalSince(since)))
            }
            if let e = h.expectedInterval {
                g("redoubt_host_expected_interval", "seconds",
                  "How often the host is expected to commit (redoubt admin notify expect).", l).set(e)
            }
        }
        for t in f.tenants {
            let l = [("tenant", t.tenant)]
            g("redoubt_tenant_snapshots", "", "Snapshots the catalog keeps for the tenant.", l).set(Double(t.snapshots))
            g("redoubt_tenant_logical", "bytes", "Sum of the snapshots' logical file sizes.", l)
                .set(Double(t.logicalBytes))
            g("redoubt_tenant_stored", "bytes", "Bytes of packs stored for the tenant.", l).set(Double(t.storedBytes))
            g("redoubt_tenant_new", "bytes", "Sum of the pack bytes each snapshot uploaded (new after dedup).", l)
                .set(Double(t.newBytes))
            if let e = t.earliestLockEnd {
                g("redoubt_tenant_earliest_lock_end_timestamp", "seconds",
                  "The earliest lock end among the tenant's kept snapshots (Unix time).", l)
                    .set(e.timeIntervalSince1970)
            }
            g("redoubt_tenant_damaged_packs", "", "Packs reported damaged (verify, restore).", l)
                .set(Double(t.damagedPacks))
            g("redoubt_tenant_legal_holds", "", "Legal holds in force.", l).set(Double(t.activeHolds))
        }
        for c in f.copyTargets {
            let l = [("tenant", c.tenant), ("target", c.id)]
            if let t = c.lastSyncAt {
                g("redoubt_copy_last_sync_timestamp", "seconds", "When the copy target was last synced (Unix time).", l)
                    .set(t.timeIntervalSince1970)
            }
            g("redoubt_copy_last_sync_success", "", "1 if the last sync succeeded, 0 if it failed or never ran.", l)
                .set(c.lastSyncOK == true ? 1.0 : 0.0)
            if let t = c.lastProofAt {
                g("redoubt_copy_last_lock_proof_timestamp", "seconds",
                  "When the target's Object Lock was last proved (Unix time).", l).set(t.timeIntervalSince1970)
            }
            g("redoubt_copy_last_lock_proof_success", "",
              "1 if the last lock proof passed, 0 if it failed or never ran.", l).set(c.lastProofOK == true ? 1.0 : 0.0)
            g("redoubt_copy_snapshots_pending", "", "Snapshots committed after the target's last sync attempt.", l)
                .set(Double(c.unsyncedSnapshots))
        }
        for o in f.outcomes {
            g("redoubt_job_outcomes", "", "Audited runs of checks and jobs, by action and outcome (since the catalog "
              + "began; a gauge because it is read from the catalog).", [("action", o.action), ("outcome", o.outcome)])
                .set(Double(o.count))
        }
        g("redoubt_gc_freed", "bytes", "Bytes garbage collection removed, over the catalog's life.")
            .set(Double(f.gcBytesFreed))
        g("redoubt_approvals_pending", "", "Approval requests waiting for admins.")
            .set(Double(f.pendingApprovals.count))
        g("redoubt_audit_records", "", "Records in the audit log's hash chain.").set(Double(f.auditRecords))
        g("redoubt_server_clock", "seconds", "The server's clock (Unix time), which every age above is measured by.")
            .set(now.timeIntervalSince1970)
    }

    /// Free and total bytes of the filesystem holding `path`.
    static func freeSpace(_ path: String) -> (free: Double, size: Double)? {
        guard let a = try? FileManager.default.attributesOfFileSystem(forPath: path),
              let free = (a[.systemFreeSize] as? NSNumber)?.doubleValue,
              let size = (a[.systemSize] as? NSNumber)?.doubleValue else { return nil }
        return (free, size)
    }
}
