//! The parser never panics, waits for every truncated command, splits inline lines as
//! Redis does, refuses oversize lengths from the length line alone; replies have the
//! documented bytes in RESP2 and RESP3.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn limits() -> RespLimits {
    RespLimits {
        bulk_bytes_max: 1 << 20,
        args_max: 1024,
        inline_bytes_max: 64 << 10,
        command_bytes_max: 4 << 20,
    }
}

/// Small limits, so that random input reaches them.
fn small_limits() -> RespLimits {
    RespLimits {
        bulk_bytes_max: 16,
        args_max: 4,
        inline_bytes_max: 32,
        command_bytes_max: 64,
    }
}

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The arguments of the command at the front of `input`, and its length.
fn command(input: &[u8], limits: &RespLimits) -> (Vec<Vec<u8>>, usize) {
    match parse(input, limits) {
        Ok(Parsed::Command { args, len }) => {
            let bytes = Bytes::copy_from_slice(&input[..len]);
            let args = args
                .into_iter()
                .map(|a| a.resolve(&bytes).to_vec())
                .collect();
            (args, len)
        }
        other => panic!("expected a command in {input:?}, got {other:?}"),
    }
}

fn words(line: &str) -> Vec<Vec<u8>> {
    command(line.as_bytes(), &limits()).0
}

fn protocol_error(input: &[u8], limits: &RespLimits) -> String {
    match parse(input, limits) {
        Err(ProtocolError(message)) => message,
        other => panic!("expected a protocol error for {input:?}, got {other:?}"),
    }
}

fn encoded(reply: &Reply, version: Version) -> String {
    let mut out = Vec::new();
    reply.encode(version, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_multibulk_command_is_its_arguments() {
    let input = multibulk(&[b"SET", b"key", b"a\r\nvalue"]);
    let (args, len) = command(&input, &limits());
    assert_eq!(args, [&b"SET"[..], b"key", b"a\r\nvalue"]);
    assert_eq!(len, input.len());
}

#[test]
fn pipelined_commands_are_taken_one_at_a_time() {
    let mut input = multibulk(&[b"GET", b"a"]);
    let first = input.len();
    input.extend_from_slice(b"PING\r\n");
    input.extend_from_slice(&multibulk(&[b"GET", b"b"]));
    let (args, len) = command(&input, &limits());
    assert_eq!((args, len), (vec![b"GET".to_vec(), b"a".to_vec()], first));
    let (args, len) = command(&input[first..], &limits());
    assert_eq!((args, len), (vec![b"PING".to_vec()], 6));
    let (args, _) = command(&input[first + 6..], &limits());
    assert_eq!(args, [&b"GET"[..], b"b"]);
}

#[test]
fn every_truncation_of_a_command_waits_for_more() {
    let input = multibulk(&[b"MSET", b"k1", b"v1", b"k2", b""]);
    for cut in 0..input.len() {
        match parse(&input[..cut], &limits()) {
            Ok(Parsed::Incomplete { needed }) => assert!(needed >= 1),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // A body that has not arrived says how much of it is missing.
    let input = multibulk(&[b"SET", b"k", &[b'x'; 1000]]);
    let cut = input.len() - 500;
    assert_eq!(
        parse(&input[..cut], &limits()),
        Ok(Parsed::Incomplete { needed: 500 })
    );
}

#[test]
fn empty_multibulks_and_empty_lines_are_skipped() {
    assert_eq!(parse(b"*0\r\n", &limits()), Ok(Parsed::Nothing { len: 4 }));
    assert_eq!(
        parse(b"*-1\r\nx", &limits()),
        Ok(Parsed::Nothing { len: 5 })
    );
    assert_eq!(parse(b"\r\n", &limits()), Ok(Parsed::Nothing { len: 2 }));
    assert_eq!(parse(b"   \n", &limits()), Ok(Parsed::Nothing { len: 4 }));
}

#[test]
fn inline_commands_split_like_redis() {
    assert_eq!(words("PING\r\n"), [b"PING"]);
    assert_eq!(words("ping\n"), [b"ping"]);
    assert_eq!(words("  SET  k\tv \r\n"), [&b"SET"[..], b"k", b"v"]);
    assert_eq!(
        words("SET \"a b\" 'c d'\r\n"),
        [&b"SET"[..], b"a b", b"c d"]
    );
    assert_eq!(
        words("ECHO \"\\x41\\n\\\"q\\\\\"\r\n"),
        [&b"ECHO"[..], b"A\n\"q\\"]
    );
    assert_eq!(words("ECHO 'it\\'s'\r\n"), [&b"ECHO"[..], b"it's"]);
    assert_eq!(words("ECHO \"\"\r\n"), [&b"ECHO"[..], b""]);
    assert_eq!(words("ECHO a\"b c\"\r\n"), [&b"ECHO"[..], b"ab c"]);
    assert_eq!(
        parse(b"PING", &limits()),
        Ok(Parsed::Incomplete { needed: 1 })
    );
}

#[test]
fn unbalanced_inline_quotes_are_a_protocol_error() {
    for line in [
        "SET \"k v\r\n",
        "SET 'k\r\n",
        "SET \"k\"v\r\n",
        "SET 'k'v\r\n",
    ] {
        assert_eq!(
            protocol_error(line.as_bytes(), &limits()),
            "unbalanced quotes in request",
            "{line:?}"
        );
    }
}

#[test]
fn oversize_lengths_are_refused_from_the_length_line_alone() {
    let limits = limits();
    // Only the length lines have arrived: the refusal does not wait for the bytes.
    let message = protocol_error(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n", &limits);
    assert!(
        message.starts_with("invalid bulk length 2000000"),
        "{message}"
    );
    let message = protocol_error(b"*100000\r\n", &limits);
    assert!(message.starts_with("invalid multibulk length"), "{message}");
    let message = protocol_error(b"*9223372036854775808\r\n", &limits);
    assert_eq!(message, "invalid multibulk length");
    let message = protocol_error(b"*1\r\n$-5\r\n", &limits);
    assert!(message.starts_with("invalid bulk length -5"), "{message}");
    let message = protocol_error(format!("*1\r\n${}", "9".repeat(40)).as_bytes(), &limits);
    assert_eq!(message, "too long bulk length line");
    // Bulk strings each under the limit, together over the command's.
    let small = small_limits();
    let input = b"*4\r\n$16\r\n0123456789abcdef\r\n$16\r\n0123456789abcdef\r\n$16\r\n";
    let message = protocol_error(input, &small);
    assert!(
        message.starts_with("command of more than 64 bytes"),
        "{message}"
    );
    let message = protocol_error(&[b'x'; 33], &small);
    assert_eq!(message, "too big inline request");
}

#[test]
fn bad_framing_is_a_protocol_error() {
    let limits = limits();
    assert_eq!(
        protocol_error(b"*1\r\n+PING\r\n", &limits),
        "expected '$', got '+'"
    );
    assert_eq!(
        protocol_error(b"*1\r\n$4\r\nPINGxx", &limits),
        "bulk string not followed by CRLF"
    );
    assert_eq!(
        protocol_error(b"*x\r\n", &limits),
        "invalid multibulk length"
    );
    assert_eq!(
        protocol_error(b"*+1\r\n", &limits),
        "invalid multibulk length"
    );
    assert_eq!(
        protocol_error(b"*1\r\n$\r\n", &limits),
        "invalid bulk length"
    );
}

#[test]
fn replies_have_the_documented_bytes() {
    use Version::{Resp2, Resp3};
    assert_eq!(encoded(&Reply::OK, Resp2), "+OK\r\n");
    assert_eq!(encoded(&Reply::err("no\r\nway"), Resp3), "-ERR no  way\r\n");
    assert_eq!(encoded(&Reply::Integer(-3), Resp2), ":-3\r\n");
    assert_eq!(encoded(&Reply::bulk("v"), Resp3), "$1\r\nv\r\n");
    assert_eq!(encoded(&Reply::bulk(""), Resp2), "$0\r\n\r\n");
    assert_eq!(encoded(&Reply::Null, Resp2), "$-1\r\n");
    assert_eq!(encoded(&Reply::Null, Resp3), "_\r\n");
    let array = Reply::Array(vec![Reply::bulk("a"), Reply::Null]);
    assert_eq!(encoded(&array, Resp2), "*2\r\n$1\r\na\r\n$-1\r\n");
    assert_eq!(encoded(&array, Resp3), "*2\r\n$1\r\na\r\n_\r\n");
    let map = Reply::Map(vec![(Reply::text("proto"), Reply::Integer(3))]);
    assert_eq!(encoded(&map, Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
    assert_eq!(encoded(&map, Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
}

/// Checks what `parse` says about `input` is consistent with `input`.
fn check_parse(input: &[u8], limits: &RespLimits) -> Result<(), TestCaseError> {
    match parse(input, limits) {
        Ok(Parsed::Command { args, len }) => {
            prop_assert!(len <= input.len());
            prop_assert!(!args.is_empty());
            prop_assert!(args.len() <= limits.args_max as usize || input[0] != b'*');
            for arg in &args {
                if let Arg::Range(range) = arg {
                    prop_assert!(range.start <= range.end && range.end <= len);
                    prop_assert!(range.len() <= limits.bulk_bytes_max as usize);
                }
            }
        }
        Ok(Parsed::Nothing { len }) => prop_assert!(len >= 1 && len <= input.len()),
        Ok(Parsed::Incomplete { needed }) => prop_assert!(needed >= 1),
        Err(_) => {}
    }
    Ok(())
}

/// Bytes that look like RESP often enough for the parser to get past the first line.
fn arb_input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x".to_vec()),
        Just(b" ".to_vec()),
        (0i64..40).prop_map(|n| n.to_string().into_bytes()),
        vec(any::<u8>(), 0..8),
    ];
    vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..256)) {
        check_parse(&input, &limits())?;
        check_parse(&input, &small_limits())?;
    }

    #[test]
    fn resp_shaped_bytes_never_panic(input in arb_input()) {
        check_parse(&input, &limits())?;
        check_parse(&input, &small_limits())?;
    }

    /// Commands sent back to back, cut into arbitrary reads, come out whole and in order.
    #[test]
    fn pipelined_commands_come_out_whole_in_any_chunking(
        commands in vec(vec(vec(any::<u8>(), 0..40), 1..5), 1..6),
        cuts in vec(1usize..64, 1..20),
    ) {
        let stream: Vec<u8> = commands
            .iter()
            .flat_map(|args| multibulk(&args.iter().map(Vec::as_slice).collect::<Vec<_>>()))
            .collect();
        let mut buffer = Vec::new();
        let mut got = Vec::new();
        let mut sent = 0;
        let mut cuts = cuts.into_iter().cycle();
        while sent < stream.len() || !buffer.is_empty() {
            let take = cuts.next().unwrap().min(stream.len() - sent);
            buffer.extend_from_slice(&stream[sent..sent + take]);
            sent += take;
            loop {
                match parse(&buffer, &limits()) {
                    Ok(Parsed::Command { .. }) => {
                        let (args, len) = command(&buffer, &limits());
                        got.push(args);
                        buffer.drain(..len);
                    }
                    Ok(Parsed::Incomplete { .. }) => break,
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                }
            }
            if take == 0 {
                break;
            }
        }
        prop_assert_eq!(got, commands);
    }

    #[test]
    fn every_truncation_of_any_command_waits(args in vec(vec(any::<u8>(), 0..20), 1..5)) {
        let input = multibulk(&args.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for cut in 0..input.len() {
            let parsed = parse(&input[..cut], &limits());
            prop_assert!(matches!(parsed, Ok(Parsed::Incomplete { .. })), "cut {}: {:?}", cut, parsed);
        }
        prop_assert_eq!(command(&input, &limits()), (args, input.len()));
    }

    /// A bare word of printable non-blank, non-quote bytes is itself (after a first
    /// word: a line that starts with `*` is a multibulk).
    #[test]
    fn plain_inline_words_are_themselves(
        line_words in vec("[!#-&(-~]{1,10}", 0..6),
    ) {
        let line = format!("ECHO {}\r\n", line_words.join(" "));
        let mut expected = vec![b"ECHO".to_vec()];
        expected.extend(line_words.iter().map(|w| w.as_bytes().to_vec()));
        prop_assert_eq!(words(&line), expected);
    }
}
