import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A parsed XML element: the small tree S3's responses need. Namespaces are dropped
/// (S3 answers in `http://s3.amazonaws.com/doc/2006-03-01/`); text is accumulated
/// across the pieces `XMLParser` delivers around entities.
public struct S3XMLElement: Sendable, Equatable {
    public var name: String
    public var text: String
    public var children: [S3XMLElement]

    /// The first child named `name`, if any.
    public func child(_ name: String) -> S3XMLElement? { children.first { $0.name == name } }
    /// Every child named `name`, in document order.
    public func all(_ name: String) -> [S3XMLElement] { children.filter { $0.name == name } }
    /// The text of the first child named `name`, trimmed; nil if there is no such child.
    public func value(_ name: String) -> String? { child(name)?.text.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// Parses `bytes`; nil for anything that is not well-formed XML.
    public static func parse(_ bytes: [UInt8]) -> S3XMLElement? {
        let delegate = TreeBuilder()
        let parser = XMLParser(data: Data(bytes))
        parser.shouldProcessNamespaces = true
        parser.shouldResolveExternalEntities = false
        parser.delegate = delegate
        guard parser.parse(), let root = delegate.root else { return nil }
        return root
    }
}

private final class TreeBuilder: NSObject, XMLParserDelegate {
    var stack: [S3XMLElement] = []
    var root: S3XMLElement?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        stack.append(S3XMLElement(name: name, text: "", children: []))
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        guard !stack.isEmpty else { return }
        stack[stack.count - 1].text += string
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        guard let done = stack.popLast() else { return }
        if stack.isEmpty { root = done } else { stack[stack.count - 1].children.append(done) }
    }
}

/// Decoded S3 XML bodies. Each parser returns nil (or throws from the caller) for a body
/// of the wrong shape rather than guessing.
public enum S3XML {
    /// An `<Error>` body: S3's code, message and request id.
    public struct ErrorBody: Sendable, Equatable {
        public var code: String
        public var message: String
        public var requestID: String?
    }

    public static func error(_ bytes: [UInt8]) -> ErrorBody? {
        guard let root = S3XMLElement.parse(bytes), root.name == "Error", let code = root.value("Code") else {
            return nil
        }
        return ErrorBody(code: code, message: root.value("Message") ?? "", requestID: root.value("RequestId"))
    }

    /// One version (or delete marker) in a `ListVersionsResult` page.
    public struct ListedVersion: Sendable, Equatable {
        public var key: String
        public var versionID: String
        public var isLatest: Bool
        public var isDeleteMarker: Bool
        public var size: Int
        public var etag: String?
    }

    /// A `ListVersionsResult` page (ListObjectVersions).
    public struct VersionPage: Sendable, Equatable {
        public var versions: [ListedVersion]
        public var isTruncated: Bool
        public var nextKeyMarker: String?
        public var nextVersionIDMarker: String?
    }

    public static func listObjectVersions(_ bytes: [UInt8]) -> VersionPage? {
        guard let root = S3XMLElement.parse(bytes), root.name == "ListVersionsResult" else { return nil }
        var out: [ListedVersion] = []
        for c in root.children where c.name == "Version" || c.name == "DeleteMarker" {
            guard let key = c.value("Key"), let vid = c.value("VersionId") else { return nil }
            let size = c.value("Size").flatMap { Int($0) } ?? 0
            out.append(ListedVersion(key: key, versionID: vid, isLatest: c.value("IsLatest") == "true",
                                     isDeleteMarker: c.name == "DeleteMarker", size: size, etag: c.value("ETag")))
        }
        return VersionPage(versions: out, isTruncated: root.value("IsTruncated") == "true",
                           nextKeyMarker: root.value("NextKeyMarker"),
                               nextVersionIDMarker: root.value("NextVersionIdMarker"))
    }

    /// A bucket's `ObjectLockConfiguration`: enabled, and any default retention (which
    /// Redoubt never relies on, but reports).
    public struct LockConfiguration: Sendable, Equatable {
        public var enabled: Bool
        public var defaultMode: String?
        public var defaultDays: Int?
        public var defaultYears: Int?
    }

    public static func lockConfiguration(_ bytes: [UInt8]) -> LockConfiguration? {
        guard let root = S3XMLElement.parse(bytes), root.name == "ObjectLockConfiguration" else { return nil }
        let rule = root.child("Rule")?.child("DefaultRetention")
        return LockConfiguration(enabled: root.value("ObjectLockEnabled") == "Enabled",
            defaultMode: rule?.value("Mode"),
                                 defaultDays: rule?.value("Days").flatMap { Int($0) },
                                     defaultYears: rule?.value("Years").flatMap {
                                     Int($0)
                                 })
    }

    /// An object version's `Retention`: mode and retain-until.
    public struct Retention: Sendable, Equatable {
        public var mode: String?
        public var retainUntil: Date?
        public init(mode: String?, retainUntil: Date?) {
            self.mode = mode
            self.retainUntil = retainUntil
        }
    }

    public static func retention(_ bytes: [UInt8]) -> Retention? {
        guard let root = S3XMLElement.parse(bytes), root.name == "Retention" else { return nil }
        return Retention(mode: root.value("Mode"), retainUntil: root.value("RetainUntilDate").flatMap(S3Date.parse))
    }

    /// The body of a PutObjectRetention request.
    public static func retentionBody(mode: String, until: Date) -> [UInt8] {
        let xmlns = "http://s3.amazonaws.com/doc/2006-03-01/"
        let until = S3Date.format(until.rounded())
        let body = "<Retention xmlns=\"\(xmlns)\"><Mode>\(mode)</Mode>"
            + "<RetainUntilDate>\(until)</RetainUntilDate></Retention>"
        return Array(body.utf8)
    }

    /// A bucket's versioning status: `Enabled`, `Suspended`, or nil if never set.
    public static func versioningStatus(_ bytes: [UInt8]) -> String?? {
        guard let root = S3XMLElement.parse(bytes), root.name == "VersioningConfiguration" else { return nil }
        return .some(root.value("Status"))
    }

    /// `InitiateMultipartUploadResult`: the upload id.
    public static func uploadID(_ bytes: [UInt8]) -> String? {
        guard let root = S3XMLElement.parse(bytes), root.name == "InitiateMultipartUploadResult" else { return nil }
        return root.value("UploadId")
    }

    /// `CompleteMultipartUploadResult` (which may also be an `<Error>` with status 200).
    public static func completeMultipart(_ bytes: [UInt8]) -> (etag: String?, error: ErrorBody?)? {
        guard let root = S3XMLElement.parse(bytes) else { return nil }
        if root.name == "Error" { return (nil, error(bytes)) }
        guard root.name == "CompleteMultipartUploadResult" else { return nil }
        return (root.value("ETag"), nil)
    }

    /// The body of a CompleteMultipartUpload request.
    public static func completeMultipartBody(_ parts: [(number: Int, etag: String)]) -> [UInt8] {
        var s = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for p in parts { s += "<Part><PartNumber>\(p.number)</PartNumber><ETag>\(escape(p.etag))</ETag></Part>" }
        s += "</CompleteMultipartUpload>"
        return Array(s.utf8)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
