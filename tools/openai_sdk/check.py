"""OpenAI's official Python SDK against `kyutai serve`: what an app written for OpenAI does.

Run by tests/server_openai_sdk.rs with the venv that tools/openai_sdk/setup.sh makes (the SDK
pinned). It writes what the SDK got under OUT (audio files, `results.json`) for the Rust test to
compare with the library's own output; it checks only what needs the SDK itself: which typed
exception each failure raises.

    check.py BASE_URL KEY AUDIO_FILE OUT [--opus]      # speech, transcriptions, errors
    check.py BASE_URL KEY AUDIO_FILE OUT --busy        # every slot is taken: RateLimitError
"""

import base64
import json
import pathlib
import sys

import openai

TEXT = "Hello from Rust. This is OpenAI's speech route."


def speech(client, out, formats):
    results = {}
    for fmt in formats:
        response = client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input=TEXT,
            response_format=fmt,
            extra_body={"seed": 7},
        )
        (out / f"speech.{fmt}").write_bytes(response.content)

    # Streamed as it is made: the SDK's streaming response, read piece by piece.
    pieces = 0
    with open(out / "streamed.pcm", "wb") as f:
        with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts",
            voice="alloy",
            input=TEXT,
            response_format="pcm",
            instructions="Speak in a cheerful tone.",
            extra_body={"seed": 7},
        ) as response:
            for piece in response.iter_bytes(chunk_size=None):
                f.write(piece)
                pieces += 1
    results["streamed_pieces"] = pieces

    # Server-sent events: speech.audio.delta, then speech.audio.done.
    events = []
    audio = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
        extra_body={"seed": 7},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[len("data:"):])
                events.append(event["type"])
                if event["type"] == "speech.audio.delta":
                    audio += base64.b64decode(event["audio"])
                else:
                    results["sse_usage"] = event.get("usage")
    (out / "sse.pcm").write_bytes(audio)
    results["sse_events"] = events
    return results


def transcriptions(client, audio_path):
    results = {}
    with open(audio_path, "rb") as f:
        results["json"] = client.audio.transcriptions.create(model="whisper-1", file=f).text
    with open(audio_path, "rb") as f:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    results["verbose"] = {
        "text": verbose.text,
        "duration": verbose.duration,
        "language": verbose.language,
        "words": [[w.word, w.start, w.end] for w in verbose.words],
    }
    with open(audio_path, "rb") as f:
        results["srt"] = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="srt"
        )
    with open(audio_path, "rb") as f:
        stream = client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=f, stream=True
        )
        deltas, done = [], None
        for event in stream:
            if event.type == "transcript.text.delta":
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                done = event.text
    results["stream"] = {"deltas": deltas, "done": done}
    return results


def errors(base_url, key, audio_path):
    results = {}
    wrong = openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0)
    try:
        wrong.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
        results["wrong_key"] = "no exception"
    except openai.AuthenticationError as e:
        results["wrong_key"] = ["AuthenticationError", e.status_code, e.code]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    try:
        client.audio.speech.create(model="tts-1", voice="nobody/nothing.wav", input=TEXT)
        results["bad_voice"] = "no exception"
    except openai.BadRequestError as e:
        results["bad_voice"] = ["BadRequestError", e.status_code, e.param]
    try:
        client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="mp3")
        results["mp3"] = "no exception"
    except openai.BadRequestError as e:
        results["mp3"] = ["BadRequestError", e.status_code, e.param]
    try:
        with open(audio_path, "rb") as f:
            client.audio.transcriptions.create(model="dall-e-3", file=f)
        results["bad_model"] = "no exception"
    except openai.BadRequestError as e:
        results["bad_model"] = ["BadRequestError", e.status_code, e.param]
    try:
        client.models.retrieve("gpt-5")
        results["no_model"] = "no exception"
    except openai.NotFoundError as e:
        results["no_model"] = ["NotFoundError", e.status_code]
    results["models"] = [m.id for m in client.models.list()]
    return results


def busy(base_url, key, audio_path):
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    results = {}
    try:
        client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
        results["speech"] = "no exception"
    except openai.RateLimitError as e:
        results["speech"] = ["RateLimitError", e.status_code, e.response.headers.get("retry-after")]
    try:
        with open(audio_path, "rb") as f:
            client.audio.transcriptions.create(model="whisper-1", file=f)
        results["transcription"] = "no exception"
    except openai.RateLimitError as e:
        results["transcription"] = [
            "RateLimitError",
            e.status_code,
            e.response.headers.get("retry-after"),
        ]
    return results


def main():
    base_url, key, audio_path, out = sys.argv[1:5]
    flags = sys.argv[5:]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"sdk_version": openai.__version__}
    if "--busy" in flags:
        results["busy"] = busy(base_url, key, audio_path)
    else:
        client = openai.OpenAI(base_url=base_url, api_key=key)
        formats = ["wav", "pcm", "flac"] + (["opus"] if "--opus" in flags else [])
        results["speech"] = speech(client, out, formats)
        results["transcriptions"] = transcriptions(client, audio_path)
        results["errors"] = errors(base_url, key, audio_path)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
