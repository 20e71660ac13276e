"""Translation: the German .qm loads for a German QGIS and tr() then answers in German; every
user-facing string of the checked files goes through tr(); the .ts file's source strings are
all still in the code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from qgis.core import QgsSettings

from mrhash_qgis.core import i18n

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "mrhash_qgis"
TRANSLATIONS = sorted((PLUGIN / "i18n").glob("mrhash_qgis_*.ts"))

# Files whose user-facing strings must all go through tr(). Add a file here once its strings
# are converted (the dock, hits layer, thumbnails, map tool and provider are not yet).
CHECKED = (
    "plugin.py",
    "core/diagnostics.py", "core/engine_client.py", "core/engine_task.py",
    "core/index_footprints.py", "core/settings.py", "core/setup_task.py",
    "processing/algorithms/base.py", "processing/algorithms/build_index.py",
    "processing/algorithms/query_at_point.py", "processing/algorithms/train_model.py",
    "ui/index_dialog.py", "ui/loss_plot.py", "ui/settings_dialog.py", "ui/train_wizard.py",
    "map_tool.py", "core/hits_layer.py", "core/results.py", "core/searches.py",
    "processing/algorithms/hits_output.py", "processing/algorithms/refine.py",
    "processing/algorithms/export_index.py", "ui/dock.py", "ui/results_panel.py",
    "ui/thumbnails.py", "ui/stac_dialog.py", "core/web_sources.py",
    "core/quick_start.py", "core/band_layout.py", "ui/quick_start_dialog.py",
    "ui/band_dialog.py", "core/detections.py", "ui/map_panel.py",
    "processing/algorithms/map_similar.py",
)
# call name -> positions of the arguments a user reads
USER_FACING: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("setText", "setTitle", "setSubTitle", "setWindowTitle", "setToolTip",
                     "setPlaceholderText", "setSpecialValueText", "setProgressText",
                     "appendPlainText", "pushInfo", "reportError", "QLabel", "QPushButton",
                     "QCheckBox", "QRadioButton", "QGroupBox", "QAction",
                     "QgsProcessingException", "addButton"), (0,)),
    "addRow": (0,), "drawText": (2,), "pushMessage": (0, 1), "question": (1, 2),
    "information": (1, 2), "warning": (1, 2), "critical": (1, 2), "QMessageBox": (1, 2),
}
# processing parameters and outputs: (name, description, ...)
DESCRIBED = re.compile(r"QgsProcessing(Parameter|Output)\w+")
TEXT_METHODS = {"displayName", "shortHelpString", "group"}  # QGIS shows what they return
NOT_WORDS = {"MrHash"}  # the product's name, the same in every language
WORDS = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class Untranslated:
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _words(node: ast.AST) -> str | None:
    """The literal text of an argument a user would read untranslated, or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _words(node.left) or _words(node.right)
    elif isinstance(node, ast.IfExp):
        return _words(node.body) or _words(node.orelse)
    else:
        return None  # a call (tr(...), tr(...).format(...)), a name: not a literal
    return text if WORDS.search(text) and text not in NOT_WORDS else None


def _name(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def untranslated(source: str, where: str) -> list[Untranslated]:
    """User-facing literal strings in a module's source that do not go through tr(), and
    tr() calls whose text is not a literal (no translation can ever match them)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node)
            positions = (1,) if DESCRIBED.fullmatch(name) else USER_FACING.get(name, ())
            if name == "tr" and not (node.args and isinstance(node.args[0], ast.Constant)):
                found.append(Untranslated(where, node.lineno, "tr() of a non-literal"))
            for position in positions:
                if position < len(node.args) and (text := _words(node.args[position])):
                    found.append(Untranslated(where, node.lineno, text))
        elif isinstance(node, ast.FunctionDef) and node.name in TEXT_METHODS:
            for statement in ast.walk(node):
                if (isinstance(statement, ast.Return) and statement.value is not None
                        and (text := _words(statement.value))):
                    found.append(Untranslated(where, statement.lineno, text))
    return sorted(found, key=lambda problem: problem.line)


def translatable_sources() -> set[str]:
    """Every literal text given to tr() anywhere in the plugin."""
    texts = set()
    for path in PLUGIN.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and _name(node) == "tr" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                texts.add(node.args[0].value)
    return texts


def ts_messages(path: Path) -> dict[str, str]:
    root = ElementTree.parse(path).getroot()
    return {message.findtext("source"): message.findtext("translation")
            for context in root.iter("context") if context.findtext("name") == i18n.CONTEXT
            for message in context.iter("message")}


@pytest.fixture
def german(qgis_app):
    """QGIS's locale overridden to German, as Settings › Options › General does; the
    translator and the settings are put back afterwards (other tests read English)."""
    settings = QgsSettings()
    before = (settings.value("locale/overrideFlag"), settings.value("locale/userLocale"))
    settings.setValue("locale/overrideFlag", True)
    settings.setValue("locale/userLocale", "de")
    yield
    i18n.remove_translator()
    for key, value in zip(("locale/overrideFlag", "locale/userLocale"), before, strict=True):
        settings.remove(key) if value is None else settings.setValue(key, value)


def test_a_german_qgis_gets_the_german_strings(german):
    assert i18n.tr("Cancel training") == "Cancel training"  # nothing installed yet
    assert i18n.install_translator() == str(PLUGIN / "i18n" / "mrhash_qgis_de.qm")
    assert i18n.tr("Cancel training") == "Training abbrechen"
    assert i18n.tr("Model saved: {model} ({seconds} s)").format(model="/m", seconds=3) == (
        "Modell gespeichert: /m (3 s)")
    i18n.remove_translator()
    assert i18n.tr("Cancel training") == "Cancel training"


def test_the_wizard_speaks_german(german, qgis_iface, engine):
    from mrhash_qgis.ui.train_wizard import TrainWizard

    i18n.install_translator()
    wizard = TrainWizard(qgis_iface, engine)
    assert wizard.windowTitle() == "MrHash — ein Modell trainieren"
    assert wizard.train_page.cancel_button.text() == "Training abbrechen"


@pytest.mark.parametrize("ts", TRANSLATIONS, ids=lambda path: path.stem)
def test_the_compiled_translation_matches_its_source(ts, tmp_path):
    """The shipped .qm is lrelease's output for the .ts (so editing the .ts alone is caught)."""
    lrelease = "/usr/bin/lrelease"
    if not Path(lrelease).exists():
        pytest.skip("lrelease (qttools5-dev-tools) is not installed")
    subprocess.run([lrelease, "-silent", str(ts), "-qm", str(tmp_path / "out.qm")], check=True)
    assert (tmp_path / "out.qm").read_bytes() == ts.with_suffix(".qm").read_bytes()


@pytest.mark.parametrize("ts", TRANSLATIONS, ids=lambda path: path.stem)
def test_every_translated_text_is_still_in_the_code(ts):
    """A reworded string loses its translation silently: the .ts must follow the code."""
    messages = ts_messages(ts)
    assert len(messages) >= 10 and all(messages.values())
    assert sorted(set(messages) - translatable_sources()) == []


def test_user_facing_strings_go_through_tr():
    found = [problem for name in CHECKED
             for problem in untranslated((PLUGIN / name).read_text(encoding="utf-8"), name)]
    assert [str(problem) for problem in found] == []


def test_the_scanner_finds_untranslated_strings():
    """The scanner itself: literals and f-strings in UI calls are found; tr() and names not."""
    probe = (
        "label.setText('Choose a folder')\n"
        "QPushButton(f'Index {name}')\n"
        "bar.pushMessage('MrHash', 'Done', level)\n"
        "label.setText(tr('Choose a folder'))\n"
        "label.setText(tr('{n} tiles').format(n=n))\n"
        "label.setText(text)\n"
        "button.setText(tr('Stop') if running else 'Start')\n"
        "tr(f'{n} tiles')\n"
        "QgsProcessingParameterNumber('K', 'Number of hits')\n"
        "def displayName(self):\n    return 'Train model'\n")
    found = [(problem.line, problem.text) for problem in untranslated(probe, "probe.py")]
    assert found == [(1, "Choose a folder"), (2, "Index "), (3, "Done"), (7, "Start"),
                     (8, "tr() of a non-literal"), (9, "Number of hits"), (11, "Train model")]


def test_the_package_ships_the_translations(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    [package] = tmp_path.glob("mrhash_qgis-*.zip")
    names = set(zipfile.ZipFile(package).namelist())
    assert {"mrhash_qgis/i18n/mrhash_qgis_de.qm", "mrhash_qgis/i18n/mrhash_qgis_de.ts"} <= names
