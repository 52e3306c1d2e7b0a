import RedoubtCore

extension AWSCredentialsError: RedoubtError {
    public var errorCode: String { "E_AWS_CREDENTIALS" }
    public var exitCategory: ExitCategory { .failure }
}
