import Foundation

/// Why credentials could not be loaded. Never carries the secret itself.
public struct AWSCredentialsError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

extension AWSCredentials {
    /// The standard chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) from the environment, else the shared credentials file
    /// (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`) under `AWS_PROFILE` or
    /// `default`.
    public static func standard(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> AWSCredentials {
        if let id = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"],
            !id.isEmpty, !secret.isEmpty
        {
            return AWSCredentials(accessKeyID: id, secretAccessKey: secret,
                sessionToken: environment["AWS_SESSION_TOKEN"])
        }
        let home = environment["HOME"] ?? NSHomeDirectory()
        let path = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? home + "/.aws/credentials"
        let profile = environment["AWS_PROFILE"] ?? "default"
        guard FileManager.default.fileExists(atPath: path) else {
            throw AWSCredentialsError(message:
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write profile [\(profile)] "
                    + "to \(path)")
        }
        return try file(path, profile: profile)
    }

    /// Credentials from a file in the shared-credentials INI format
    /// (`aws_access_key_id`, `aws_secret_access_key`, optional `aws_session_token` under
    /// `[profile]`). A file with no section headers is read as one unnamed profile, so a
    /// credentials file made for one copy target needs no `[default]` line.
    public static func file(_ path: String, profile: String = "default") throws -> AWSCredentials {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AWSCredentialsError(message: """
                cannot read AWS credentials file \(path): check it exists and is readable by this user
                """)
        }
        let text = String(decoding: data, as: UTF8.self)
        var section: String? = nil
        var sawSection = false
        var values: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                sawSection = true
                var name = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) }
                section = name
                continue
            }
            guard sawSection ? section == profile : true else { continue }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            values[key] = value
        }
        guard let id = values["aws_access_key_id"], let secret = values["aws_secret_access_key"], !id.isEmpty,
            !secret.isEmpty
        else {
            throw AWSCredentialsError(message:
                "AWS credentials file \(path) has no aws_access_key_id and aws_secret_access_key"
                    + (sawSection ? " under [\(profile)]" : ""))
        }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }
}
