import RedoubtCore

extension MediaError: RedoubtError {
    public var errorCode: String { code }

    /// Damaged, truncated or missing media are an integrity failure (exit 5), as damaged
    /// packs in a store are; a wrong, unlabelled or foreign medium, a device failure or a
    /// refused write is a plain failure whose message names the volume and the fix.
    public var exitCategory: ExitCategory {
        switch code {
        case "E_MEDIA_BLOCK", "E_MEDIA_DAMAGED", "E_MEDIA_TRUNCATED", "E_MEDIA_MISSING": .integrity
        default: .failure
        }
    }
}
