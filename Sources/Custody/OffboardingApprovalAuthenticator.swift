import CustosModel
import Foundation
import HSM
import Storage

/// The HSM MAC over a tenant-offboarding approval: ``DestructionApprovalAuthenticator``'s scheme
/// with its own domain, so an approval cannot move between a key destruction and an offboarding,
/// nor be written, moved to another tenant, or have its waiting period shortened by whoever can
/// write to the database without the HSM.
enum OffboardingApprovalAuthenticator {
    static let domain = "custos/tenant_offboardings/v1"

    static func message(for row: TenantOffboardingStore.Row, approvedBy: String, certificateSerial: String, approvedAt: Date) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(row.id.uuidString.lowercased())
        encoding.append(row.tenant.rawValue)
        encoding.append(row.requestedBy)
        encoding.append(DestructionApprovalAuthenticator.microseconds(row.expiresAt))
        encoding.append(row.waitingDays)
        encoding.append(approvedBy)
        encoding.append(certificateSerial)
        encoding.append(DestructionApprovalAuthenticator.microseconds(approvedAt))
        return encoding.bytes
    }

    static let requestDomain = "custos/tenant_offboardings/request/v1"

    /// The bytes a request's own MAC covers, made when it is recorded (see
    /// ``DestructionApprovalAuthenticator/requestMessage(for:)``).
    static func requestMessage(for row: TenantOffboardingStore.Row) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: requestDomain)
        encoding.append(row.id.uuidString.lowercased())
        encoding.append(row.tenant.rawValue)
        encoding.append(row.requestedBy)
        encoding.append(DestructionApprovalAuthenticator.microseconds(row.requestedAt))
        encoding.append(DestructionApprovalAuthenticator.microseconds(row.expiresAt))
        encoding.append(row.waitingDays)
        return encoding.bytes
    }

    /// Whether `row` carries a request MAC that verifies: only requests recorded by Custos do.
    static func isAuthenticRequest(_ row: TenantOffboardingStore.Row, pool: SessionPool) async throws -> Bool {
        guard let stored = row.requestMAC, let version = row.requestMACVersion else { return false }
        return try await rootMACVerifies(stored, of: requestMessage(for: row), macVersion: version, pool: pool)
    }

    /// Whether `row` carries an approval whose MAC verifies under the root MAC key it names.
    static func isAuthentic(_ row: TenantOffboardingStore.Row, pool: SessionPool) async throws -> Bool {
        guard let approvedBy = row.approvedBy, let approvedAt = row.approvedAt, let serial = row.approverCertificateSerial,
              let stored = row.approvalMAC, let version = row.approvalMACVersion else { return false }
        let message = message(for: row, approvedBy: approvedBy, certificateSerial: serial, approvedAt: approvedAt)
        return try await rootMACVerifies(stored, of: message, macVersion: version, pool: pool)
    }
}
