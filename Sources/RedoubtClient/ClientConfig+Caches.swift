import Crypto
import Foundation
import RedoubtCore

extension ClientConfig {
    /// The directory of metadata caches: `DIR/caches/`, 0700.
    public var cachesDirectory: URL { directory.appendingPathComponent("caches") }

    /// The metadata cache of one job, or of one set of backed-up paths when no job is named.
    ///
    /// Why never one cache for the host: a cache holds the files of the backup that wrote it,
    /// so a host with two jobs (`/etc` hourly, `/srv` nightly) sharing one would read every
    /// file of each job on every run. A job's cache is named after the job (`job-NAME`); a
    /// backup without a job is keyed by the SHA-256 of its sorted absolute paths, so running
    /// the same paths again finds the same cache whatever their order.
    public func cachePath(job: String?, paths: [String]) -> String {
        let name: String
        if let job {
            name = "job-" + job
        } else {
            let key = Set(paths).sorted().joined(separator: "\u{0}")
            name = "paths-" + hexString(SHA256.hash(data: Data(key.utf8))).prefix(32)
        }
        return cachesDirectory.appendingPathComponent(name + ".cache").path
    }

    /// Creates the caches directory (0700) and removes the one shared cache file that
    /// earlier versions kept at `DIR/cache` (it named the last backup's files only, and
    /// holds the keys of their chunks: docs/FORMAT.md §3.4).
    public func prepareCaches() throws {
        let fm = FileManager.default
        try fm.createDirectory(at: cachesDirectory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: cachePath, isDirectory: &isDir), !isDir.boolValue {
            try? fm.removeItem(atPath: cachePath)
        }
    }
}
