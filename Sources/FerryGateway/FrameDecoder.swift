import FerryCore
import FerryWire
import NIOCore

/// Splits the byte stream into frames (docs/protocol.md, "TCP frames"). A frame longer than
/// the limit for its kind is refused from its header alone, before its body is buffered; a
/// frame that does not arrive whole within `frameTimeout` of its first byte closes the
/// connection (a peer that sends half a frame and stops holds no connection slot forever).
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = (Frame.Header, ByteBuffer)

    /// Largest REQUEST body accepted.
    let maxRequest: Int
    /// How long one frame may take to arrive once its first byte came (nil: no limit).
    let frameTimeout: TimeAmount?
    private let watch = StallWatch()

    init(maxRequest: Int, frameTimeout: TimeAmount?) {
        self.maxRequest = maxRequest
        self.frameTimeout = frameTimeout
    }

    /// Starts the frame's clock at its first byte (once per frame).
    private func arm(_ context: ChannelHandlerContext, _ buffer: ByteBuffer) {
        guard let timeout = frameTimeout, buffer.readableBytes > 0, watch.timer == nil else { return }
        let ctx = context
        watch.timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [watch] in
            watch.timer = nil
            watch.stalled = true
            ctx.close(promise: nil)
        }
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard !watch.stalled else { return .needMoreData }
        guard buffer.readableBytes >= Frame.headerSize else {
            arm(context, buffer)
            return .needMoreData
        }
        let header = try buffer.withUnsafeReadableBytes { try Frame.Header(reading: $0.baseAddress!) }
        let limit = header.kind == .request ? maxRequest : Frame.maxControlPayload
        guard header.length <= UInt64(limit) else {
            throw FerryError(.tooLarge, "a \(header.kind) frame of \(header.length) bytes exceeds this gateway's limit of \(limit) bytes")
        }
        let length = Int(header.length)
        guard buffer.readableBytes >= Frame.headerSize + length else {
            // Let the cumulation buffer grow once to the frame's size instead of doubling.
            buffer.reserveCapacity(minimumWritableBytes: Frame.headerSize + length - buffer.readableBytes)
            arm(context, buffer)
            return .needMoreData
        }
        watch.timer?.cancel()  // whole: the next frame's clock starts at its own first byte
        watch.timer = nil
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        let body = buffer.readSlice(length: length)!
        context.fireChannelRead(wrapInboundOut((header, body)))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        watch.timer?.cancel()
        watch.timer = nil
        return .needMoreData
    }
}

/// The frame clock of one connection (touched on its event loop only).
final class StallWatch: @unchecked Sendable {
    var timer: Scheduled<Void>?
    var stalled = false
}

extension ByteBuffer {
    /// Appends a frame header.
    mutating func writeFrameHeader(_ h: Frame.Header) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: Frame.headerSize) { p in
            h.write(to: p.baseAddress!)
            return Frame.headerSize
        }
    }
}
