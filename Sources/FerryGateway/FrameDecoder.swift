import FerryCore
import FerryWire
import NIOCore

/// What the frame decoder passes on: whole frames, or a large request's body in the parts
/// it arrives in, so that the gateway copies each part once, straight into the slot the
/// request goes out in, while the rest is still arriving (no buffer of the whole frame).
enum InboundFrame {
    /// A whole frame.
    case frame(Frame.Header, ByteBuffer)
    /// A large REQUEST's header and the first part of its body (at least its message header).
    case start(Frame.Header, ByteBuffer)
    /// The next part of that body; the parts add up to the header's length.
    case part(ByteBuffer)
}

/// Splits the byte stream into frames (docs/protocol.md, "TCP frames"). A frame longer than
/// the limit for its kind is refused from its header alone, before its body is buffered; a
/// frame that does not arrive whole within `frameTimeout` of its first byte closes the
/// connection (a peer that sends half a frame and stops holds no connection slot forever).
/// A REQUEST of `streamFrom` bytes or more is passed on in parts as they come.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = InboundFrame

    /// Largest REQUEST body accepted.
    let maxRequest: Int
    /// How long one frame may take to arrive once its first byte came (nil: no limit).
    let frameTimeout: TimeAmount?
    /// Requests this large or larger are passed on in parts.
    let streamFrom: Int
    private let watch = StallWatch()
    /// Bytes of the streamed body still to come.
    private var streaming = 0

    init(maxRequest: Int, frameTimeout: TimeAmount?, streamFrom: Int = 256 << 10) {
        self.maxRequest = maxRequest
        self.frameTimeout = frameTimeout
        self.streamFrom = max(streamFrom, MessageLayout.headerSize)
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

    /// The whole frame came: the next frame's clock starts at its own first byte.
    private func whole() {
        watch.timer?.cancel()
        watch.timer = nil
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard !watch.stalled else { return .needMoreData }
        if streaming > 0 {
            // Everything there is passed on, so the handler never gathers parts (no copy).
            let n = min(buffer.readableBytes, streaming)
            guard n > 0 else { return .needMoreData }
            streaming -= n
            if streaming == 0 { whole() }
            context.fireChannelRead(wrapInboundOut(.part(buffer.readSlice(length: n)!)))
            return .continue
        }
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
        if header.kind == .request && length >= streamFrom {
            // Started once the message header is there (the gateway looks at it first).
            guard buffer.readableBytes >= Frame.headerSize + MessageLayout.headerSize else {
                arm(context, buffer)
                return .needMoreData
            }
            arm(context, buffer)
            buffer.moveReaderIndex(forwardBy: Frame.headerSize)
            let n = min(buffer.readableBytes, length)
            streaming = length - n
            if streaming == 0 { whole() }
            context.fireChannelRead(wrapInboundOut(.start(header, buffer.readSlice(length: n)!)))
            return .continue
        }
        guard buffer.readableBytes >= Frame.headerSize + length else {
            // Let the cumulation buffer grow once to the frame's size instead of doubling.
            buffer.reserveCapacity(minimumWritableBytes: Frame.headerSize + length - buffer.readableBytes)
            arm(context, buffer)
            return .needMoreData
        }
        whole()
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        let body = buffer.readSlice(length: length)!
        context.fireChannelRead(wrapInboundOut(.frame(header, body)))
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
