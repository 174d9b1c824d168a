//! The Huffman code of HPACK string literals (RFC 7541 §5.2, Appendix B).
//!
//! The code is canonical (codes of one length are consecutive, in symbol order), so it is
//! fully given by each symbol's code length; the codes are derived from the lengths at
//! compile time and decoding walks the lengths (RFC 7541's own table, checked in the tests
//! against the codes the RFC lists for a few symbols).
//!
//! Must not: accept a string whose padding is longer than 7 bits, is not the start of the
//! EOS code, or that contains EOS (RFC 7541 §5.2: a decoding error).

/// Code length, in bits, of each symbol: bytes 0..=255, then EOS (256).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

/// Each symbol's code, right-aligned: consecutive within a length, in symbol order.
const CODES: [u32; 257] = {
    let mut codes = [0u32; 257];
    let mut code: u32 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                codes[sym] = code;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    codes
};

/// What canonical decoding needs per code length: the first code of that length, how many
/// codes have it, and where its symbols start in [`SYMBOLS_BY_CODE`].
struct LengthClass {
    first_code: u32,
    count: u32,
    first_symbol: u16,
}

const CLASSES: [LengthClass; MAX_LEN + 1] = {
    let mut classes = [const {
        LengthClass {
            first_code: 0,
            count: 0,
            first_symbol: 0,
        }
    }; MAX_LEN + 1];
    let mut taken: u16 = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut sym = 0;
        let mut count = 0;
        let mut first_code = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                if count == 0 {
                    first_code = CODES[sym];
                }
                count += 1;
            }
            sym += 1;
        }
        classes[len] = LengthClass {
            first_code,
            count,
            first_symbol: taken,
        };
        taken += count as u16;
        len += 1;
    }
    classes
};

/// Symbols in code order (by length, then symbol).
const SYMBOLS_BY_CODE: [u16; 257] = {
    let mut out = [0u16; 257];
    let mut at = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                out[at] = sym as u16;
                at += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    out
};

/// The length in bytes of `input` Huffman-encoded.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&b| CODE_LENGTHS[b as usize] as usize)
        .sum();
    bits.div_ceil(8)
}

/// Appends `input` Huffman-encoded to `out`, padded with the start of EOS (all ones).
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let len = CODE_LENGTHS[b as usize] as u32;
        acc = (acc << len) | CODES[b as usize] as u64;
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
}

/// The Huffman-coded string was malformed (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHuffman;

/// Appends the decoding of `input` to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidHuffman> {
    out.reserve(input.len() * 8 / 5);
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | ((byte >> shift) & 1) as u32;
            len += 1;
            let class = &CLASSES[len];
            let offset = code.wrapping_sub(class.first_code);
            if offset < class.count {
                let sym = SYMBOLS_BY_CODE[(class.first_symbol as u32 + offset) as usize];
                if sym == EOS {
                    return Err(InvalidHuffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len >= MAX_LEN {
                return Err(InvalidHuffman);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(InvalidHuffman);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_those_the_rfc_lists() {
        // A few rows of RFC 7541 Appendix B, as (symbol, code, length).
        for (sym, code, len) in [
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b'z' as usize, 0x7b, 7),
            (b'~' as usize, 0x1ffd, 13),
            (0, 0x1ff8, 13),
            (255, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ] {
            assert_eq!((CODES[sym], CODE_LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn the_rfc_example_strings_decode() {
        // RFC 7541 C.4.1 and C.6.1.
        let mut out = Vec::new();
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        decode(&www, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        let mut enc = Vec::new();
        encode(b"www.example.com", &mut enc);
        assert_eq!(enc, www);
        assert_eq!(encoded_len(b"www.example.com"), www.len());
        out.clear();
        decode(&[0x64, 0x02], &mut out).unwrap();
        assert_eq!(out, b"302");
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(enc.len(), encoded_len(&all));
        let mut out = Vec::new();
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // '0' is 00000: padded with zeros instead of ones.
        assert_eq!(decode(&[0b0000_0000], &mut out), Err(InvalidHuffman));
        // A whole byte of padding (8 one bits) after a full symbol.
        assert_eq!(decode(&[0b0000_0111, 0xff], &mut out), Err(InvalidHuffman));
        // EOS itself (30 ones) then padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(InvalidHuffman)
        );
        // The valid one: '0' then three bits of padding.
        out.clear();
        decode(&[0b0000_0111], &mut out).unwrap();
        assert_eq!(out, b"0");
    }
}
