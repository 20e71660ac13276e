"""Translation of the plugin's user-facing strings, as QGIS plugins do: every string goes
through `tr()` (context "MrHash"), and `install_translator()` loads
`i18n/mrhash_qgis_<locale>.qm` for the user's QGIS locale when the plugin has one."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QLocale, QTranslator

CONTEXT = "MrHash"
I18N_DIR = Path(__file__).resolve().parents[1] / "i18n"
_translator: QTranslator | None = None  # kept alive while installed


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)


def user_locale() -> str:
    """QGIS's UI locale ("de", "pt_BR"): the override when set, else the system's."""
    settings = QgsSettings()
    if settings.value("locale/overrideFlag", False, type=bool):
        return str(settings.value("locale/userLocale", "") or "")
    return QLocale.system().name()


def install_translator() -> str | None:
    """Install the translation for the user's locale; -> the .qm file used, or None."""
    global _translator
    locale = user_locale()
    for name in (locale, locale[:2]):
        path = I18N_DIR / f"mrhash_qgis_{name}.qm"
        if name and path.is_file():
            translator = QTranslator()
            if translator.load(str(path)):
                QCoreApplication.installTranslator(translator)
                _translator = translator
                return str(path)
    return None


def remove_translator() -> None:
    global _translator
    if _translator is not None:
        QCoreApplication.removeTranslator(_translator)
        _translator = None
