import Foundation
@testable import RedoubtServer

extension RepositoryService {
    /// The SQLite catalog behind a test server, for the tests that read or damage its rows
    /// directly (the server itself holds only the repository protocols).
    var sqlite: Catalog {
        get throws {
            guard let c = catalog as? Catalog else {
                throw ServerError(500, "E_INTERNAL", "this test needs the SQLite catalog")
            }
            return c
        }
    }
}
