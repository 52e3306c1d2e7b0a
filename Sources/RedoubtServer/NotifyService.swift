import Foundation
import RedoubtCore

// Notification channels, host expectations, the status screen, and the evaluation that
// turns catalog facts into events (docs/PROTOCOL.md §5.3).
extension RepositoryService {
    /// Event kinds a channel's rules may name.
    static let notifyKinds = Set(MonitorEvent.Kind.allCases.map(\.rawValue)).subtracting(["test"])

    public func addNotifyChannel(_ req: Wire.AddNotifyChannelRequest, ctx: CallContext) async throws
        -> Wire.NotifyChannelInfo {
        let events = req.events ?? []
        if let bad = events.first(where: { !Self.notifyKinds.contains($0) }) {
            throw ServerError.badRequest("unknown event kind \(SafeText.echo(bad)); known: "
                                         + Self.notifyKinds.sorted().joined(separator: ", "))
        }
        if let t = req.tenant, try await catalog.tenant(t) == nil {
            throw ServerError.notFound("tenant \(SafeText.echo(t)) does not exist: `redoubt admin tenant list`")
        }
        let target: String
        switch req.kind {
        case "webhook":
            target = try NotifyChannels.webhookURL(req.url ?? "")
            for f in [req.secretFile, req.caFile].compactMap({ $0 }) where !f.hasPrefix("/") {
                throw ServerError.badRequest("\(SafeText.echo(f)) must be an absolute path on the server host")
            }
        case "email":
            let (host, port) = try SMTPClient.address(req.smtp ?? "")
            guard let from = req.from, let to = req.to, !to.isEmpty else {
                throw ServerError.badRequest("an email channel needs --from and at least one --to")
            }
            for a in [from] + to { try SMTPClient.checkMailbox(a) }
            // Why: messages name tenants and hosts; in the clear only to this machine.
            guard req.starttls == true || MetricsListener.isLoopback(host) else {
                throw ServerError.badRequest("""
                    SMTP to \(SafeText.echo(host)) needs --starttls: notifications name tenants and hosts, and go \
                    in the clear only to a loopback address
                    """)
            }
            if req.credentialsFile != nil && req.starttls != true {
                throw ServerError.badRequest("SMTP credentials need --starttls: a password is never sent in the clear")
            }
            for f in [req.credentialsFile, req.caFile].compactMap({ $0 }) where !f.hasPrefix("/") {
                throw ServerError.badRequest("\(SafeText.echo(f)) must be an absolute path on the server host")
            }
            target = "smtp://\(host):\(port) to " + to.joined(separator: ",")
        default:
            throw ServerError.badRequest("notification channel kind \(SafeText.echo(req.kind)) is not webhook or email")
        }
        let id = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let now = try await now()
        try await catalog.insertNotifyChannel(id: id, req, target: target, now: now)
        await audit(ctx, .addNotifyChannel, object: "notify channel \(id)", outcome: "ok",
              detail: "kind=\(req.kind) target=\(target) events=\(events.joined(separator: ","))")
        guard let info = try await catalog.notifyChannels().first(where: { $0.info.id == id })?.info else {
            throw ServerError(500, "E_INTERNAL", "notification channel \(id) was not stored")
        }
        return info
    }

    public func listNotifyChannels() async throws -> [Wire.NotifyChannelInfo] {
        try await catalog.notifyChannels().map(\.info)
    }

    public func removeNotifyChannel(id: String, ctx: CallContext) async throws -> [Wire.NotifyChannelInfo] {
        guard try await catalog.removeNotifyChannel(id) else {
            throw ServerError.notFound("no notification channel \(SafeText.echo(id)): `redoubt admin notify list`")
        }
        await audit(ctx, .removeNotifyChannel, object: "notify channel \(id)", outcome: "ok")
        return try await listNotifyChannels()
    }

    /// Sends a `test` event to one channel now and says whether it arrived.
    public func testNotifyChannel(id: String, ctx: CallContext) async throws -> Wire.NotifyEvent {
        guard let c = try await catalog.notifyChannels().first(where: { $0.info.id == id }) else {
            throw ServerError.notFound("no notification channel \(SafeText.echo(id)): `redoubt admin notify list`")
        }
        let now = try await now()
        let e = Wire.NotifyEvent(id: UUID().uuidString.lowercased(), kind: "test", state: "once", tenant: "-",
                                 host: "-", summary: "a test notification from the Redoubt server at \(serverURL)",
                                 command: "redoubt admin notify list", openedAt: now, resolvedAt: nil)
        do { try await notifier.send(e, to: c) } catch {
            await audit(ctx, .testNotifyChannel, object: "notify channel \(id)", outcome: "error", detail: "\(error)")
            throw ServerError(502, "E_NOTIFY", "notification channel \(id) (\(c.info.target)): \(error)")
        }
        await audit(ctx, .testNotifyChannel, object: "notify channel \(id)", outcome: "ok")
        return e
    }

    public func setHostExpectation(_ req: Wire.HostExpectationRequest, ctx: CallContext) async throws
        -> Wire.HostExpectationRequest {
        guard try await catalog.tenant(req.tenant) != nil else {
            throw ServerError.notFound("tenant \(SafeText.echo(req.tenant)) does not exist: "
                                       + "`redoubt admin tenant list`")
        }
        guard Self.isValidPrincipalName(req.host) else {
            throw ServerError.badRequest("host \(SafeText.echo(req.host)) is not a host name")
        }
        if let s = req.intervalSeconds, !(60...(366 * 86400)).contains(s) {
            throw ServerError.badRequest("the expected interval must be between 1 minute and 366 days")
        }
        try await catalog.setHostExpectation(tenant: req.tenant, host: req.host, interval: req.intervalSeconds)
        await audit(ctx, .setHostExpectation, object: "host \(req.tenant)/\(req.host)", outcome: "ok",
              detail: "interval=\(req.intervalSeconds.map { String(Int($0)) } ?? "none")")
        return req
    }

    /// How long `h` may go without a commit before it is stale.
    static func staleAfter(_ h: MonitoringFacts.Host) -> TimeInterval {
        h.expectedInterval.map { $0 * 1.5 } ?? Notifier.defaultStaleAfter
    }

    /// The status screen: stale hosts, lagging copies, failed jobs, approvals, open alerts.
    public func status() async throws -> Wire.StatusInfo {
        let now = try await now()
        let f = try await catalog.monitoringFacts(now: now)
        let stale = f.hosts.compactMap { h -> Wire.StatusInfo.StaleHost? in
            guard let since = h.lastCommit ?? h.enrolledAt, now.timeIntervalSince(since) > Self.staleAfter(h) else {
                return nil
            }
            return .init(tenant: h.tenant, host: h.host, lastCommit: h.lastCommit,
                         ageSeconds: now.timeIntervalSince(since),
                         expectedIntervalSeconds: h.expectedInterval ?? Notifier.defaultStaleAfter)
        }
        let copies = f.copyTargets.compactMap { c -> Wire.StatusInfo.LaggingCopy? in
            if c.lastProofOK == false { return .init(tenant: c.tenant, target: c.id, problem: "lock proof failed") }
            if c.lastSyncOK == false { return .init(tenant: c.tenant, target: c.id, problem: "last sync failed") }
            if c.lastSyncAt == nil { return .init(tenant: c.tenant, target: c.id, problem: "never synced") }
            if c.unsyncedSnapshots > 0, let t = c.lastSyncAt, now.timeIntervalSince(t) > 6 * 3600 {
                return .init(tenant: c.tenant, target: c.id, problem: "\(c.unsyncedSnapshots) snapshot(s) behind")
            }
            return nil
        }
        var failed: [String: Int] = [:]
        for o in f.outcomes where ["error", "partial", "damaged"].contains(o.outcome) {
            failed[o.action, default: 0] += o.count
        }
        return Wire.StatusInfo(
            serverTime: now, staleHosts: stale, laggingCopies: copies,
            failedJobs: failed.sorted { $0.key < $1.key }.map { .init(action: $0.key, count: $0.value) },
            pendingApprovals: f.pendingApprovals.map {
                .init(id: $0.id, action: $0.action, object: $0.object, requester: $0.requester, createdAt: $0.createdAt)
            },
            openAlerts: try await catalog.openAlerts().map(\.event))
    }

    /// Turns the catalog's facts into events: conditions open and resolve, one-offs are sent
    /// once. `server run` calls it every minute; it is cheap and idempotent.
    public func evaluateNotifications() async throws {
        let now = try await now()
        let f = try await catalog.monitoringFacts(now: now)
        let n = notifier
        for h in f.hosts {
            let key = "host-stale:\(h.tenant)/\(h.host)"
            if let since = h.lastCommit ?? h.enrolledAt, now.timeIntervalSince(since) > Self.staleAfter(h) {
                let age = Int(now.timeIntervalSince(since) / 3600)
                await n.post(MonitorEvent(.hostStale, tenant: h.tenant, host: h.host, summary: """
                    host \(h.tenant)/\(h.host) has not committed a snapshot for \(age) h \
                    (stale after \(Int(Self.staleAfter(h) / 3600)) h)
                    """, command: "redoubt admin host list \(h.tenant) --stale-after 26h", key: key))
            } else { await n.resolve(key: key) }
        }
        for t in f.tenants {
            let key = "integrity-failure:\(t.tenant)/-"
            if t.damagedPacks > 0 {
                await n.post(MonitorEvent(.integrityFailure, tenant: t.tenant, host: "-",
                                    summary: "tenant \(t.tenant): \(t.damagedPacks) pack(s) reported damaged",
                                    command: "redoubt admin host list \(t.tenant)", key: key))
            } else { await n.resolve(key: key) }
        }
        for c in f.copyTargets {
            let lag = "copy-lagging:\(c.tenant)/\(c.id)", proof = "lock-proof-failed:\(c.tenant)/\(c.id)"
            if c.lastSyncOK == false {
                await n.post(MonitorEvent(.copyLagging, tenant: c.tenant, host: c.id,
                                    summary: "copy target \(c.id) of tenant \(c.tenant): the last sync failed; "
                                        + "\(c.unsyncedSnapshots) snapshot(s) not copied",
                                    command: "redoubt admin copy status", key: lag))
            } else { await n.resolve(key: lag) }
            if c.lastProofOK == false {
                await n.post(MonitorEvent(.lockProofFailed, tenant: c.tenant, host: c.id,
                                    summary: "copy target \(c.id) of tenant \(c.tenant) failed its Object Lock proof",
                                    command: "redoubt admin copy status", key: proof))
            } else { await n.resolve(key: proof) }
        }
        for a in f.pendingApprovals {
            await n.post(MonitorEvent(.approvalRequested, tenant: "-", host: a.id,
                                summary: "\(a.requester) asks for \(a.action) of \(a.object): request \(a.id)",
                                command: "redoubt admin request list", key: "approval-requested:\(a.id)",
                                lasting: false))
        }
        for h in try await catalog.holds() {
            if h.releasedAt == nil {
                await n.post(MonitorEvent(.holdPlaced, tenant: h.tenant, host: h.target,
                                    summary: "legal hold \(h.id) placed on \(h.kind.rawValue) \(h.target) by "
                                        + "\(h.createdBy)", command: "redoubt admin hold list",
                                    key: "hold-placed:\(h.id)", lasting: false))
            } else if let r = h.releasedAt, now.timeIntervalSince(r) < 86400 {
                await n.post(MonitorEvent(.holdLifted, tenant: h.tenant, host: h.target,
                                    summary: "legal hold \(h.id) on \(h.kind.rawValue) \(h.target) was lifted",
                                    command: "redoubt admin hold list", key: "hold-lifted:\(h.id)", lasting: false))
            }
        }
        try await postFailedJobs()
        await n.resolveQuietBursts(now: now)
    }

    /// Failed checks and jobs recorded in the audit log since the last evaluation, once each.
    /// The first evaluation starts at the log's head: history is not news.
    private func postFailedJobs() async throws {
        let mark = "notify.audit-seq"
        guard let seen = try await catalog.setting(mark).flatMap(Int64.init) else {
            try await catalog.setSetting(mark, String(try catalog.auditChainHead().seq))
            return
        }
        var last = seen
        for r in try await catalog.failedJobRecords(after: seen) {
            await notifier.post(MonitorEvent(.jobFailed, tenant: "-", host: r.action,
                                       summary: "\(r.action) of \(r.object): \(r.outcome) (audit record \(r.seq))",
                                       command: "redoubt audit list --after \(r.seq - 1) --limit 1",
                                       key: "job-failed:\(r.seq)", lasting: false))
            last = r.seq
        }
        if last != seen { try await catalog.setSetting(mark, String(last)) }
    }

    /// Starts delivery and a periodic evaluation (every `interval` seconds) until cancelled;
    /// `redoubt server run` runs it beside the API.
    public func runNotifications(every interval: TimeInterval = 60) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.notifier.run() }
            group.addTask {
                while !Task.isCancelled {
                    do { try await self.evaluateNotifications() } catch {
                        self.logger.error("notification evaluation failed", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
