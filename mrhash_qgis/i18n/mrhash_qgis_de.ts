<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="de_DE" sourcelanguage="en">
<context>
    <name>MrHash</name>
    <message>
        <source>MrHash panel</source>
        <translation>MrHash-Bedienfeld</translation>
    </message>
    <message>
        <source>Query similar places on the map</source>
        <translation>Ähnliche Orte auf der Karte suchen</translation>
    </message>
    <message>
        <source>Build index…</source>
        <translation>Index erstellen…</translation>
    </message>
    <message>
        <source>Train model…</source>
        <translation>Modell trainieren…</translation>
    </message>
    <message>
        <source>Settings…</source>
        <translation>Einstellungen…</translation>
    </message>
    <message>
        <source>MrHash — build index</source>
        <translation>MrHash — Index erstellen</translation>
    </message>
    <message>
        <source>Build index</source>
        <translation>Index erstellen</translation>
    </message>
    <message>
        <source>Rebuild from scratch (otherwise only new/changed files)</source>
        <translation>Von Grund auf neu erstellen (sonst nur neue/geänderte Dateien)</translation>
    </message>
    <message>
        <source>tick Rebuild from scratch</source>
        <translation>„Von Grund auf neu erstellen“ ankreuzen</translation>
    </message>
    <message>
        <source>Indexing cancelled.</source>
        <translation>Indexierung abgebrochen.</translation>
    </message>
    <message>
        <source>MrHash — train a model</source>
        <translation>MrHash — ein Modell trainieren</translation>
    </message>
    <message>
        <source>Cancel training</source>
        <translation>Training abbrechen</translation>
    </message>
    <message>
        <source>Index with this model…</source>
        <translation>Mit diesem Modell indexieren…</translation>
    </message>
    <message>
        <source>Keep running in the background</source>
        <translation>Im Hintergrund weiterlaufen lassen</translation>
    </message>
    <message>
        <source>Stop training</source>
        <translation>Training beenden</translation>
    </message>
    <message>
        <source>Back to the wizard</source>
        <translation>Zurück zum Assistenten</translation>
    </message>
    <message>
        <source>Training cancelled.</source>
        <translation>Training abgebrochen.</translation>
    </message>
    <message>
        <source>Model saved: {model} ({seconds} s)</source>
        <translation>Modell gespeichert: {model} ({seconds} s)</translation>
    </message>
    <message>
        <source>Save model as</source>
        <translation>Modell speichern unter</translation>
    </message>
</context>
</TS>
