#!/usr/bin/env python3
"""Writes the seed corpus for the packet_parser target (valid and malformed packets). Run from fuzz/."""
import os, struct, zlib

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s > 0xffff: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ipv4(proto, src, dst, payload, ttl=64, flags_frag=0x4000, opts=b''):
    ihl = 5 + len(opts) // 4
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, ihl * 4 + len(payload), 1, flags_frag, ttl, proto, 0, src, dst) + opts
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

def l4sum(src, dst, proto, seg):
    if len(src) == 4: ph = src + dst + struct.pack('!BBH', 0, proto, len(seg))
    else: ph = src + dst + struct.pack('!IxxxB', len(seg), proto)
    return csum(ph + seg)

def tcp(src, dst, sp, dp, flags, payload=b''):
    seg = struct.pack('!HHIIBBHHH', sp, dp, 1, 0, 5 << 4, flags, 64240, 0, 0) + payload
    return seg[:16] + struct.pack('!H', l4sum(src, dst, 6, seg)) + seg[18:]

def udp(src, dst, sp, dp, payload):
    seg = struct.pack('!HHHH', sp, dp, 8 + len(payload), 0) + payload
    return seg[:6] + struct.pack('!H', l4sum(src, dst, 17, seg) or 0xffff) + seg[8:]

def crc32c(b):
    crc = 0xffffffff
    for x in b:
        crc ^= x
        for _ in range(8): crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff

def sctp(sp, dp, chunks):
    body = b''.join(struct.pack('!BBH', t, 0, 4 + len(v)) + v + b'\0' * (-len(v) % 4) for t, v in chunks)
    p = struct.pack('!HHII', sp, dp, 1, 0) + body
    return p[:8] + struct.pack('<I', crc32c(p)) + p[12:]

def ipv6(nh, src, dst, payload):
    return struct.pack('!IHBB', 0x60000000, len(payload), nh, 64) + src + dst + payload

C, V, R = bytes([10, 9, 0, 1]), bytes([10, 0, 2, 100]), bytes([10, 1, 0, 1])
C6 = bytes.fromhex('20010db8000000000000000000000009'); V6 = bytes.fromhex('20010db8000000000000000000000100')
seeds = {
    'tcp4_syn': ipv4(6, C, V, tcp(C, V, 40000, 80, 0x02)),
    'tcp4_ack_data': ipv4(6, C, V, tcp(C, V, 40000, 80, 0x18, b'GET / HTTP/1.0\r\n\r\n')),
    'tcp4_options_ihl6': ipv4(6, C, V, tcp(C, V, 1, 2, 0x10), opts=b'\x01\x01\x01\x00'),
    'udp4_dns': ipv4(17, C, V, udp(C, V, 5353, 53, b'\x12\x34\x01\x00')),
    'udp4_zero_csum': ipv4(17, C, V, struct.pack('!HHHH', 1, 53, 12, 0) + b'abcd'),
    'sctp4_init': ipv4(132, C, V, sctp(40000, 80, [(1, b'\0' * 16)])),
    'sctp4_cookie_echo_abort': ipv4(132, C, V, sctp(1, 80, [(10, b'\0' * 4), (6, b'')])),
    'tcp6_syn': ipv6(6, C6, V6, tcp(C6, V6, 40000, 80, 0x02)),
    'udp6_hbh': ipv6(0, C6, V6, bytes([17, 0, 1, 4, 0, 0, 0, 0]) + udp(C6, V6, 1, 53, b'x')),
    'ipv6_frag_first': ipv6(44, C6, V6, bytes([6, 0, 0, 1, 0, 0, 0, 9]) + tcp(C6, V6, 1, 80, 0x02)),
    'ipv4_frag_later': ipv4(6, C, V, b'\0' * 16, flags_frag=0x0010),
    'truncated_ipv4': ipv4(6, C, V, tcp(C, V, 1, 2, 0x02))[:30],
    'bad_ihl': bytes([0x44]) + ipv4(6, C, V, tcp(C, V, 1, 2, 0x02))[1:],
    'empty': b'',
}
quoted = ipv4(6, C, R, tcp(C, R, 40000, 8080, 0x02))[:28]
icmp = struct.pack('!BBHI', 3, 3, 0, 0) + quoted
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
seeds['icmp4_port_unreach'] = ipv4(1, R, C, icmp)
os.makedirs('corpus/packet_parser', exist_ok=True)
for name, data in seeds.items():
    with open(f'corpus/packet_parser/{name}.bin', 'wb') as f: f.write(data)
print(len(seeds), 'seeds')
