import FerryCore
import FerryRedis
import FerryTCP

/// The network transports, registered with the core's URL-scheme registry. Linking this
/// target is all a program does to call `tcp://` and `redis://` URLs: the core calls
/// `cferry_network_register` (weakly referenced, see CFerryLinux.h) before its first lookup.
/// Calling `NetworkTransports.register()` by hand is harmless and makes it explicit.
public enum NetworkTransports {
    /// Registers `tcp` and `redis` (idempotent).
    public static func register() {
        TCPTransport.register()
        RedisTransport.register()
    }
}

/// The C entry the core's weak reference resolves to; not part of libferry's ABI (the
/// version script keeps it local).
@_cdecl("cferry_network_register")
public func ferryNetworkRegister() {
    NetworkTransports.register()
}
