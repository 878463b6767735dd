public import CustosModel
import Foundation
public import Storage

// Template MACs (``TemplateAuthenticator``, migration 33). Rows written before them carry none;
// they count as written by Custos only until the HSM's list of key states says every template
// was sealed, after which a row without a MAC is as forged as one with a wrong MAC.
extension TenantKeyring {
    /// Templates sealed per transaction by ``sealUnsealedTemplates(actor:)``.
    static let templateSealBatch = 500

    /// The MAC a template stored under `subject` carries (the newest root MAC key).
    /// - Throws: ``CustodyError``.
    public func sealTemplate(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> TemplateSeal {
        try await custody { try await TemplateAuthenticator.seal(template, subject: subject, tenant: tenant, pool: pool, rootKeys: rootKeys) }
    }

    /// Whether `template`, read from `subject`'s row, is one Custos wrote there: its MAC checks,
    /// or it has none and not every template has been sealed yet.
    /// - Throws: ``CustodyError`` (HSM trouble, an unreadable list of key states).
    public func isAuthenticTemplate(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool {
        try await custody {
            guard let seal = template.seal else { return !(try await anchoredStates().templatesSealed) }
            return try await TemplateAuthenticator.isAuthentic(template, seal: seal, subject: subject, tenant: tenant, pool: pool)
        }
    }

    /// At start (the verification graph's background work): a list that does not say every
    /// template is sealed gets the mark when no tenant has a template without a MAC (a new
    /// installation, or one whose officer sealed them while an older build rewrote the list and
    /// dropped the mark); otherwise the officers are told to seal them (``sealUnsealedTemplates(actor:)``), which waits for every instance to run
    /// this build (an older one still writes templates without a MAC).
    public func reconcileTemplateSeals() async throws {
        try await custody {
            guard !(try await anchoredStates(fresh: true).templatesSealed) else { return }
            var unsealed = 0
            for tenant in try await TenantStore(database).list().map(\.id) {
                let has = try await database.withTenant(tenant, context: "look for unsealed templates") { connection in
                    try await TemplateStore.hasUnsealed(on: connection)
                }
                if has { unsealed += 1 }
            }
            guard unsealed == 0 else {
                logger.warning(
                    "templates written before template MACs are trusted until an officer seals them: once every instance runs this build, run `custos db seal-templates`",
                    metadata: ["tenants_with_unsealed_templates": "\(unsealed)"]
                )
                return
            }
            try await markTemplatesSealed(actor: "custos", sealed: nil)
        }
    }

    /// Seals every template without a MAC, trusting it as written by Custos (the rows an upgrade
    /// found), then marks the list so that a template without a MAC is refused from then on.
    /// Run it once every instance runs this build. Idempotent; a row rewritten meanwhile keeps
    /// its writer's MAC.
    /// - Returns: the templates sealed.
    /// - Throws: ``CustodyError``.
    public func sealUnsealedTemplates(actor: String) async throws -> Int {
        try await custody {
            var sealed = 0
            for tenant in try await TenantStore(database).list().map(\.id) {
                while true {
                    let batch = try await database.withTenant(tenant, context: "read unsealed templates") { connection in
                        try await TemplateStore.unsealed(limit: Self.templateSealBatch, on: connection)
                    }
                    guard !batch.isEmpty else { break }
                    var seals = [(subject: String, template: StoredTemplate, seal: TemplateSeal)]()
                    for (subject, template) in batch {
                        seals.append((subject, template, try await TemplateAuthenticator.seal(template, subject: subject, tenant: tenant, pool: pool, rootKeys: rootKeys)))
                    }
                    let made = seals
                    let done = try await database.withTenant(tenant, context: "seal templates") { connection in
                        var done = 0
                        for (subject, template, seal) in made where try await TemplateStore.sealUnsealed(subject: subject, template: template, seal: seal, on: connection) {
                            done += 1
                        }
                        return done
                    }
                    sealed += done
                    // Every row of the batch rewritten meanwhile: read again only if progress was made.
                    if done == 0 { break }
                }
            }
            try await markTemplatesSealed(actor: actor, sealed: sealed)
            return sealed
        }
    }

    /// Puts the mark on the list, with an audit entry when an officer sealed rows.
    private func markTemplatesSealed(actor: String, sealed: Int?) async throws {
        let audit = audit
        try await database.withTransaction(context: "mark templates sealed") { connection in
            try await self.changeAnchoredStates(on: connection, scopedTo: nil, actor: actor) { $0.templatesSealed = true }
            if let sealed {
                try await AuditEntry(tenant: nil, actor: actor, action: .templatesSeal, target: "templates", details: ["sealed": "\(sealed)"])
                    .append(to: audit, on: connection)
            }
        }
        invalidate(prefix: "")
    }
}
