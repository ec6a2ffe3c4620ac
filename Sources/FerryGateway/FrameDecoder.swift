import FerryCore
import FerryWire
import NIOCore

/// Splits the byte stream into frames (docs/protocol.md, "TCP frames"). A frame longer than
/// the limit for its kind is refused from its header alone, before its body is buffered.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = (Frame.Header, ByteBuffer)

    /// Largest REQUEST body accepted.
    let maxRequest: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= Frame.headerSize else { return .needMoreData }
        let header = try buffer.withUnsafeReadableBytes { try Frame.Header(reading: $0.baseAddress!) }
        let limit = header.kind == .request ? maxRequest : Frame.maxControlPayload
        guard header.length <= UInt64(limit) else {
            throw FerryError(.tooLarge, "a \(header.kind) frame of \(header.length) bytes exceeds this gateway's limit of \(limit) bytes")
        }
        let length = Int(header.length)
        guard buffer.readableBytes >= Frame.headerSize + length else {
            // Let the cumulation buffer grow once to the frame's size instead of doubling.
            buffer.reserveCapacity(minimumWritableBytes: Frame.headerSize + length - buffer.readableBytes)
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        let body = buffer.readSlice(length: length)!
        context.fireChannelRead(wrapInboundOut((header, body)))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
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
