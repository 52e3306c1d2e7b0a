import Crypto
import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``SettingsRepository``.

extension Catalog {
    public func setting(_ key: String) throws -> String? {
        try db.read { try Self.setting($0, key) }
    }

    static func setting(_ db: Database, _ key: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key])
    }

    public func setSetting(_ key: String, _ value: String) throws {
        try db.write {
            try $0.execute(sql: "INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", arguments: [key, value])
        }
    }

    /// The latest time the server has seen; never decreases (DESIGN.md: retention by time).
    public func advanceClock(to t: Date) throws -> Date {
        try db.write { db in
            let latest = try Double.fetchOne(db, sql: "SELECT latest FROM clock WHERE id = 1") ?? 0
            let next = max(latest, t.timeIntervalSince1970)
            try db.execute(sql: "INSERT OR REPLACE INTO clock(id, latest) VALUES (1, ?)", arguments: [next])
            return Date(timeIntervalSince1970: next)
        }
    }
}
