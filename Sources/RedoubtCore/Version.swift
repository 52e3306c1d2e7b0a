public enum RedoubtVersion { public static let string = "0.1.0" }
