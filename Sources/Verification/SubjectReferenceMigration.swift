import CustosModel
import Logging
import Storage

/// `pii` references move on use (DESIGN §5): HMAC references cannot be recomputed without the
/// external id, so a lookup by external id — the only moment the id is at hand — moves the
/// subject's stored references to the active version's, inside the lookup's own transaction.
/// The old version's reference count drops with each subject looked up.
enum SubjectReferenceMigration {
    /// Gallery notices of a move name no instance, so every instance applies them (this one
    /// included, through its listener).
    static let noticeInstance = "pii-move"

    /// Names the tenant and version of a template the move deleted for its failing MAC (never
    /// the subject), as a comparison refused for one does.
    static let logger = Logger(label: "custos.verification.pii-move")

    /// Moves every row stored under one of `references` other than the first (the active
    /// version's NFC reference, as ``SubjectReferencing`` orders them) to the first, and tells
    /// the 1:N galleries at commit: the old reference erased, the new one enrolled per moved
    /// template.
    /// - Returns: the reference the subject is stored under from now on.
    static func moveToActive(
        _ references: [SubjectReference], tenant: TenantID, seals: any RecordSealing, on connection: DatabaseTransaction
    ) async throws -> SubjectReference? {
        guard let active = references.first else { return nil }
        let old = references.dropFirst().map(\.value).filter { $0 != active.value }
        guard !old.isEmpty else { return active }
        let moved = try await SubjectReferenceStore.move(from: old, to: active, tenant: tenant, on: connection)
        // A template's MAC covers its reference: each one authentic under the old reference moves
        // with its MAC under the new, in one statement (a row that kept its MAC across the change
        // would withdraw it: migration 34). One that is not authentic is the database writer's:
        // deleted, as moving it would need a MAC Custos does not give it — a row without a MAC
        // too, once every record is sealed. Before that, one without a MAC (written before
        // migration 33) moves without one.
        for (from, template) in moved.templatesToMove {
            guard try await seals.isAuthentic(template, subject: from, tenant: tenant) else {
                try await TemplateStore.delete(subject: from, keyVersion: template.keyVersion, on: connection)
                logger.error("a template under an old pii reference failed its MAC check and was deleted, not moved (written by the database's writer?)", metadata: [
                    "tenant": "\(tenant)", "key_version": "\(template.keyVersion)",
                ])
                continue
            }
            let seal = template.seal == nil ? nil : try await seals.seal(template, subject: active.value, tenant: tenant)
            try await TemplateStore.move(template, from: from, to: active, seal: seal, on: connection)
        }
        // Likewise each moved session's subject MAC.
        for session in moved.movedSessions {
            guard let old = session.seal,
                  try await seals.isAuthentic(SessionSubject(id: session.id, subject: session.from, expiresAt: session.expiresAt), seal: old, tenant: tenant)
            else { continue }
            let seal = try await seals.seal(SessionSubject(id: session.id, subject: active.value, expiresAt: session.expiresAt), tenant: tenant)
            try await SessionStore.replaceSubjectSeal(session.id, expected: old, with: seal, on: connection)
        }
        if moved.templates + moved.duplicateTemplates > 0 {
            for subject in old {
                try await TemplateStore.notify(GalleryChange(instance: noticeInstance, tenant: tenant, kind: .erased, subject: subject), on: connection)
            }
            for version in Set(moved.keyVersions).sorted() {
                try await TemplateStore.notify(
                    GalleryChange(instance: noticeInstance, tenant: tenant, kind: .enrolled, keyVersion: version, subject: active.value), on: connection
                )
            }
        }
        return active
    }
}
